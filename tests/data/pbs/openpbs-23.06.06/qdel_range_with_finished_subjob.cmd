qdel 4086[0-3].vm-pbs
