qstat -t 4086[].vm-pbs
