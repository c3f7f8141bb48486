qstat -x -f -F json 54.vm-pbs 
