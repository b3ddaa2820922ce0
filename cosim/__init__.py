"""Co-simulation: Verilog generation, Verilator builds, cocotb testbenches and the `Chip` driver."""
