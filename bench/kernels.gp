# kernels.gp: kernel throughput against size, from bench_kernels --sweep
# (and bench_torch.py --sweep when torch is installed).
#   gnuplot -e "data='sweep.dat'; torch='torch_sweep.dat'; out='kernels.svg'" bench/kernels.gp
# torch may be '' (no torch line).
if (!exists("torch")) torch = ''
set terminal svg size 900,620 dynamic font "sans,12" background "white"
set output out
set title "Optimizer step throughput against size (float32; effective GB/s = bytes moved / time)"
set xlabel "parameters (n)"
set ylabel "effective GB/s (higher is better)"
set logscale x 10
set format x "10^{%L}"
set xrange [800:1.25e8]
set yrange [0:*]
set grid xtics ytics
set key below box horizontal maxcols 2 width -4
if (torch ne '') {
  plot data using 1:2 with linespoints lw 2 pt 7 title "descent Adam, 1 thread", \
       data using 1:3 with linespoints lw 2 pt 5 title "descent Adam, all cores (kpool)", \
       data using 1:4 with linespoints lw 1 pt 6 title "descent SGD momentum, 1 thread", \
       data using 1:5 with linespoints lw 1 pt 4 title "descent SGD momentum, all cores", \
       data using 1:6 with lines lw 2 dt 2 lc rgb "black" title "Adam's access pattern without arithmetic, 1 thread", \
       torch using 1:2 with linespoints lw 2 pt 9 lc rgb "red" title "torch.optim Adam (tuned allocator), 1 thread"
} else {
  plot data using 1:2 with linespoints lw 2 pt 7 title "descent Adam, 1 thread", \
       data using 1:3 with linespoints lw 2 pt 5 title "descent Adam, all cores (kpool)", \
       data using 1:4 with linespoints lw 1 pt 6 title "descent SGD momentum, 1 thread", \
       data using 1:5 with linespoints lw 1 pt 4 title "descent SGD momentum, all cores", \
       data using 1:6 with lines lw 2 dt 2 lc rgb "black" title "Adam's access pattern without arithmetic, 1 thread"
}
