qdel 55.vm-pbs 
