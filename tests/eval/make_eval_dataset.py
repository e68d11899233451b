#!/usr/bin/python3
"""Writes a small a3fta dataset (a3fta/dataset.h format) of real Fashion-MNIST
images for the evaluation tests: the first TRAIN images of each of CLASSES in
"train" and the first TEST in "test", read from the Debian package's IDX files.
Usage: make_eval_dataset.py OUT.h5 [TRAIN TEST CLASS...]  (exit 77 without the package)"""
import gzip
import os
import sys

import h5py
import numpy as np

SRC = "/usr/share/datasets/fashion-mnist"
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"]


def idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header:], dtype=np.uint8)


def split(prefix, per_class, classes):
    images = idx(f"{SRC}/{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = idx(f"{SRC}/{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int32)
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes]))
    return images[keep], labels[keep]


def main():
    out = sys.argv[1]
    n_train, n_test = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (40, 60)
    classes = [int(c) for c in sys.argv[4:]] or [7, 9]
    if not os.path.exists(f"{SRC}/t10k-images-idx3-ubyte.gz"):
        print(f"skipped: no Fashion-MNIST in {SRC} (Debian package dataset-fashion-mnist)")
        sys.exit(77)
    with h5py.File(out, "w") as f:
        f.attrs["format"] = "a3fta-dataset"
        f.attrs["format_version"] = np.int32(1)
        f.attrs["source"] = f"eval test subset of {SRC}"
        f.attrs["num_classes"] = np.int32(10)
        f.attrs.create("class_names", NAMES, dtype=h5py.string_dtype())
        for name, (prefix, per) in {"train": ("train", n_train), "test": ("t10k", n_test)}.items():
            images, labels = split(prefix, per, classes)
            g = f.create_group(name)
            g.create_dataset("images", data=images)
            g["images"].attrs["layout"] = "(N, C, H, W) uint8: 0 = black, 255 = full intensity"
            g.create_dataset("labels", data=labels)
            g["labels"].attrs["layout"] = "(N) int32: the class of each image"


main()
