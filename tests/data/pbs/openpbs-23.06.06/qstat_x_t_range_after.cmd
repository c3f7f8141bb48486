qstat -x -t 4086[].vm-pbs
