#!/usr/bin/env python3
"""Every CUDA, cuBLAS, cuDNN and NCCL call of the CUDA sources is checked.

Issue #6 asks that every such call be checked and every kernel launch be
followed by a check of the last kernel error. This scans the .cu/.h files of
src/backend/cuda and src/dist and fails (exit 1, naming file:line) on:
  - a kernel launch (<<<...>>>) with no CU_LAUNCHED / *_LAUNCHED / LAUNCH check
    in the statement or the 3 lines after it;
  - a call to cuda*, cublas*, cudnn* (direct or through dnn_api.) or nccl*
    whose result is dropped: not inside a checking macro (CU_CHECK, CU_BLAS,
    CUDA_TRY, NCCL_TRY, CREATE_CUDA, CREATE_BLAS, DNN, ok, settle, nccl_call,
    cu_check*), not assigned, compared, returned or tested.
A dropped result is allowed in teardown and abort functions (names containing
free, destroy, abort or teardown: there is nothing left to report to) and on
lines that say why with "// unchecked:"; functions that only report a status
(cudaGetErrorName, ...) need no check.
usage: check_cuda_calls.py [SOURCE_ROOT]   (default: the repository)
"""
import os
import re
import sys

CALL = re.compile(r"\b(?:dnn_api\.)?((?:cuda|cublas|cudnn|nccl)[A-Z]\w*)\s*\(")
REPORTERS = {"cudaGetErrorName", "cudaGetErrorString", "cudaGetLastError", "ncclGetErrorString",
             "ncclGetLastError", "cublasGetStatusName", "cublasGetStatusString",
             "cudnnGetErrorString", "cudaPeekAtLastError"}
CHECKERS = ("CU_CHECK", "CU_BLAS", "CUDA_TRY", "NCCL_TRY", "CREATE_CUDA", "CREATE_BLAS", "DNN(",
            "ok(", "settle(", "nccl_call(", "cu_check")
USED = re.compile(r"(=|==|!=|return|if\s*\(|while\s*\(|&&|\|\||\?|:|!)\s*$")
FUNC = re.compile(r"^(?:extern \"C\" )?[A-Za-z_][\w\s\*]*?\b(\w+)\s*\([^;]*$")
TEARDOWN = re.compile(r"free|destroy|abort|teardown", re.I)


def statement_start(lines, i):
    """The text of the statement that line i belongs to, up to the call."""
    j = i
    while j > 0 and not re.search(r"[;{}]\s*(//.*)?$", lines[j - 1]):
        j -= 1
    return "\n".join(lines[j:i + 1])


def check_file(path, problems):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    func = ""
    for i, line in enumerate(lines):
        code = line.split("//")[0]
        m = FUNC.match(line)
        if m and not line.startswith((" ", "#", "}")):
            func = m.group(1)
        if code.lstrip().startswith(("#", "*")):
            continue
        if "<<<" in code:
            window = "\n".join(lines[i:i + 4])
            if "LAUNCHED" not in window and "LAUNCH(" not in statement_start(lines, i):
                problems.append(f"{path}:{i + 1}: kernel launch without CU_LAUNCHED after it")
        for c in CALL.finditer(code):
            name = c.group(1)
            if name in REPORTERS or name.endswith("_fn") or "unchecked:" in line:
                continue
            before = statement_start(lines, i)
            before = before[:len(before) - len(line) + c.start()]
            if any(k in before for k in CHECKERS) or USED.search(before.rstrip()):
                continue
            if re.search(r"\b(typedef|decltype|X)\b", before) or TEARDOWN.search(func):
                continue
            problems.append(f"{path}:{i + 1}: the result of {name} is not checked "
                            f"(in {func or 'file scope'})")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    problems, files = [], 0
    for sub in ("src/backend/cuda", "src/dist"):
        folder = os.path.join(root, sub)
        for name in sorted(os.listdir(folder)):
            if name.endswith((".cu", ".cuh")) or (sub.endswith("cuda") and name.endswith(".h")):
                check_file(os.path.join(folder, name), problems)
                files += 1
    for p in problems:
        print(p)
    print(f"check_cuda_calls: {files} files, {len(problems)} unchecked call(s) or launch(es)")
    return 1 if problems or files == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
