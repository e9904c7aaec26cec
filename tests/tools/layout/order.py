"""The functions callgrind profiles (written with --demangle=no) saw run, as a symbol ordering file
for lld: hottest first (instructions in the function itself, summed over the profiles), then every
other function that ran (start-up code runs once but is touched all the same)."""
import collections
import re
import sys

cost = collections.Counter()
for path in sys.argv[1:]:
    names, current, after_call = {}, None, False
    for line in open(path, errors="replace"):
        match = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if match:
            kind, ident, name = match.groups()
            if name:
                names[ident] = re.sub(r"'\d+$", "", name)
            if kind == "fn":
                current = names.get(ident)
                cost[current] += 0
            else:
                cost[names.get(ident)] += 0
            continue
        if line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
            continue
        if current and line[:1] and (line[:1].isdigit() or line[:1] in "+-*"):
            fields = line.split()
            if not after_call and len(fields) >= 2 and fields[1].isdigit():
                cost[current] += int(fields[1])
            after_call = False

for name, _ in cost.most_common():
    # Not ours to place: callgrind's own entries and versioned libc symbols.
    if name and re.fullmatch(r"[A-Za-z0-9_.$]+", name):
        print(name)
