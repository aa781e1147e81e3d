"""``python -m bench.world OUT.png [--n 16] [--seed 0] [--size 64]``: a sheet of world pictures."""
import argparse

from PIL import Image

from bench.world.world import caption, render, sample_scenes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    scenes = sample_scenes(args.n, args.seed)
    pictures = ((render(scenes, args.size) + 1) * 127.5).round().clamp(0, 255).byte()
    sheet = Image.new("RGB", (args.size * args.n, args.size))
    for k, picture in enumerate(pictures):
        sheet.paste(Image.fromarray(picture.permute(1, 2, 0).numpy()), (k * args.size, 0))
    sheet.save(args.out)
    for scene in scenes:
        print(caption(scene))


if __name__ == "__main__":
    main()
