import re,sys,glob
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
            if n>80: print(f"{f}:{start+1}: {n} lines: {l[:70]}")
            i=j
        i+=1
