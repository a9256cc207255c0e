#!/usr/bin/env python3
"""fnlength: fails when a function in server/ is longer than 80 lines (a
table, which may be longer, says so with a comment containing "table" on the
line before it).  Run by `make check-layers`."""
import re,sys,glob
bad=[]
for f in sorted(glob.glob('server/**/*.c',recursive=True)):
    lines=open(f).read().split('\n')
    i=0
    while i<len(lines):
        l=lines[i]
        if re.match(r'^[A-Za-z].*\)\s*\{\s*$',l) and not l.startswith(('static const','const')) and '=' not in l:
            depth=0;start=i
            for j in range(i,len(lines)):
                depth+=lines[j].count('{')-lines[j].count('}')
                if depth==0: break
            n=j-start+1
            if n>80 and 'table' not in lines[start-1]:
                print(f"{f}:{start+1}: {n} lines: {l[:70]}"); bad.append(f)
            i=j
        i+=1

if bad:
    sys.exit('fnlength: %d functions longer than 80 lines' % len(bad))
print('fnlength: no function in server/ is longer than 80 lines')
