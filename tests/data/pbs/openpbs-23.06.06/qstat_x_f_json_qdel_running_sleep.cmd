qstat -x -f -F json 55.vm-pbs 
