"""Reads `perf script -F addr --show-mmap-events` of a server's page faults and prints the names
of BINARY's functions and read-only data at the faulting addresses, in the order first touched:
the symbols lld's --symbol-ordering-file can place (code in .text, constants in .rodata)."""
import bisect
import re
import subprocess
import sys

binary, faults = sys.argv[1], sys.argv[2]


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


# Where the kernel mapped the binary: `[0xSTART(0xLEN) @ 0xPGOFF ...]: PERMS PATH`.
mapping = re.compile(r"\[0x([0-9a-f]+)\(0x[0-9a-f]+\) @ (0x[0-9a-f]+|0) .*\]: (\S+) (\S+)$")
bias, addresses = None, []
for line in open(faults):
    match = mapping.search(line)
    if "PERF_RECORD_MMAP" in line:
        if match and match[4].endswith(binary.lstrip(".")) and match[3].startswith("r-x"):
            start, offset = int(match[1], 16), int(match[2], 16)
            for load in run("readelf", "-lW", binary).splitlines():
                fields = load.split()
                # LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg(s) Align, the flags as "R E".
                if fields[:1] == ["LOAD"] and "E" in fields[6:-1]:
                    bias = start - (int(fields[2], 16) + offset - int(fields[1], 16))
        continue
    fields = line.split()
    if len(fields) == 1:
        addresses.append(int(fields[0], 16))
if bias is None:
    sys.exit(f"faults.py: {binary} is not mapped in {faults}")

placeable = []
for line in run("readelf", "-SW", binary).splitlines():
    match = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
    if match and match[1] in (".text", ".rodata"):
        placeable.append((int(match[2], 16), int(match[2], 16) + int(match[3], 16)))

symbols = []
for line in run("nm", "-n", "-S", "--defined-only", binary).splitlines():
    fields = line.split()
    if len(fields) == 4 and re.fullmatch(r"[A-Za-z0-9_.$]+", fields[3]):
        symbols.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
starts = [s[0] for s in symbols]

seen = set()
for address in addresses:
    address -= bias
    if not any(lo <= address < hi for lo, hi in placeable):
        continue
    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and address < symbols[i][0] + max(symbols[i][1], 1) and symbols[i][2] not in seen:
        seen.add(symbols[i][2])
        print(symbols[i][2])
