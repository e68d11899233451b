#!/usr/bin/python3
"""Hand-written digits for the second transfer task: writes scikit-learn's bundled
UCI digits (1,797 grey 8x8 images, 0-16 ink levels; Debian: python3-sklearn) as PNG
folders that `a3fta import images` reads, one subfolder per digit:

  tools/import_digits.py OUTDIR        -> OUTDIR/train/<d>/*.png, OUTDIR/test/<d>/*.png
  a3fta import images OUTDIR/train --out data/digits.h5 --size 28 --fit resize
  a3fta import images OUTDIR/test  --out data/digits.h5 --size 28 --fit resize --split test

Per digit, the first 80% of its images (in the dataset's order) go to train, the rest to
test. Ink levels 0..16 become 0..255 (white digit on black, as Fashion-MNIST's garments);
`--size 28 --fit resize` enlarges them bilinearly to Fashion-MNIST's 28x28.
"""
import os
import struct
import sys
import zlib

from sklearn.datasets import load_digits


def write_png(path, pixels, height, width):
    """8-bit greyscale PNG, no filtering (filter byte 0 per row)."""
    raw = b"".join(b"\x00" + bytes(pixels[r * width:(r + 1) * width]) for r in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    digits = load_digits()
    by_class = {}
    for image, label in zip(digits.images, digits.target):
        by_class.setdefault(int(label), []).append(image)
    counts = {"train": 0, "test": 0}
    for label, images in sorted(by_class.items()):
        n_train = (len(images) * 8) // 10
        for i, image in enumerate(images):
            split = "train" if i < n_train else "test"
            folder = os.path.join(out, split, str(label))
            os.makedirs(folder, exist_ok=True)
            pixels = [min(255, round(v * 255 / 16)) for v in image.reshape(-1)]
            write_png(os.path.join(folder, f"{i:04d}.png"), pixels, 8, 8)
            counts[split] += 1
    print(f"digits: {counts['train']} train and {counts['test']} test images of 10 classes "
          f"in {out}/train and {out}/test")


if __name__ == "__main__":
    main()
