// The raw harness: the testbench of eie.cosim.player under a bare C++ main (no Python, no VPI), linked against
// the same Verilated model the cocotb simulator uses. A benchmark instrument: `make bench` prints its speed
// beside cocotb's. Arguments are the testbench's plusargs (+program=FILE +captures=FILE); prints the seconds
// the simulation took as JSON.
#include <chrono>
#include <cstdio>
#include <memory>

#include "Vtop.h"
#include "verilated.h"

double sc_time_stamp() { return 0; }

int main(int argc, char** argv) {
    const std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    context->commandArgs(argc, argv);
    const std::unique_ptr<Vtop> top{new Vtop{context.get(), ""}};
    const auto t0 = std::chrono::steady_clock::now();
    while (!top->finished && !context->gotFinish()) {
        top->eval();
        if (!top->eventsPending()) break;
        context->time(top->nextTimeSlot());
    }
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - t0;
    const bool finished = top->finished;
    top->final();
    std::printf("{\"seconds\": %.6f, \"finished\": %s}\n", seconds.count(), finished ? "true" : "false");
    return finished ? 0 : 1;
}
