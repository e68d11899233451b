#!/usr/bin/env python3
"""The CUDA emulator's translator (tests/cuda_emu/README.md).

Writes a .cu file as C++ for the emulator: each launch
    kernel<<<grid, block[, shmem[, stream]]>>>(args)
becomes
    emu_launch("kernel", grid, block, shmem, stream, kernel, args)
keeping every newline, and a `#line` puts the compiler's messages on the
.cu file's lines. Each `__shared__` declaration is followed, on its line, by
    emu_fresh_shared(&name, sizeof name);
so that every block starts with that memory full of NaNs, as nothing on a
GPU promises what a block's shared memory holds before it writes it.
Nothing else changes: the emulator's headers give the rest its meaning.
Headers with device code (cuda_internal.h) are translated too, into the
directory of the translated .cpp files, where their #include finds them first.

usage: translate.py IN.cu OUT.cpp   or   translate.py IN.h OUT.h
"""
import re
import sys


def skip_balanced(text, i, open_ch, close_ch):
    """Index just past the bracket that closes the one at text[i]."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise SystemExit("translate.py: unbalanced %s" % open_ch)


def split_top_level(s):
    """s split at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def kernel_start(text, end):
    """Where the kernel expression that ends at `end` begins: an identifier,
    possibly with template arguments (name<4>)."""
    i = end
    if text[i - 1] == ">":
        depth = 0
        while True:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and re.match(r"[A-Za-z0-9_:]", text[i - 1]):
        i -= 1
    return i


# A statement that starts with __shared__: one declarator, on one line.
SHARED = re.compile(r"^([ \t]*__shared__\s[^;{}()=,\n]*?\b(\w+)\s*(?:\[[^\];\n]*\]\s*)*;)", re.M)
ANY_SHARED = re.compile(r"^[ \t]*(?:extern\s+)?__shared__\b", re.M)


def fresh_shared(text):
    """Each __shared__ declaration, then its refill with NaNs per block."""
    if len(ANY_SHARED.findall(text)) != len(SHARED.findall(text)):
        raise SystemExit("translate.py: a __shared__ declaration it cannot follow (one "
                         "declarator, on one line, no extern, initialiser or attribute)")
    return SHARED.sub(lambda m: "%s emu_fresh_shared(&%s, sizeof %s);"
                      % (m.group(1), m.group(2), m.group(2)), text)


def translate_launches(text):
    out, pos = [], 0
    while True:
        at = text.find("<<<", pos)
        if at < 0:
            out.append(text[pos:])
            return "".join(out)
        start = kernel_start(text, at)
        kernel = text[start:at].strip()
        close = text.index(">>>", at)
        raw_config = text[at + 3:close]
        count = len(split_top_level(raw_config))
        if not 2 <= count <= 4:
            raise SystemExit("translate.py: launch of %s has %d configuration arguments"
                             % (kernel, count))
        raw_config += "".join([", 0", ", (cudaStream_t)0"][count - 2:])
        paren = close + 3
        while text[paren].isspace():
            paren += 1
        if text[paren] != "(":
            raise SystemExit("translate.py: launch of %s without arguments" % kernel)
        args_end = skip_balanced(text, paren, "(", ")")
        raw_args = text[paren + 1:args_end - 1]
        # the original text's newlines (and a macro's backslashes) all stay
        call = 'emu_launch("%s", %s, %s%s)' % (
            kernel, raw_config, kernel, "," + raw_args if raw_args.strip() else "")
        out.append(text[pos:start] + call)
        pos = args_end


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    with open(dst, "w") as f:
        f.write('#line 1 "%s"\n' % src)
        f.write(fresh_shared(translate_launches(text)))


if __name__ == "__main__":
    main()
