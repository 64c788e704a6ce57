"""T15 data: the block table, the HDF5 writer and the reader."""
