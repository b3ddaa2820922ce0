"""Software side: pruning, compression, the sparse encoder, the bit-exact reference and the performance model."""
