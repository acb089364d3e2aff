// The fairwatch operator CLI, callable in-process so tests can drive it.
#pragma once

#include <ostream>

namespace fairwatch::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// Parses argv, runs one command against the controller and returns the exit
// code. Terminal output (screen clearing in `top`) only when out_is_terminal.
int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err,
           bool out_is_terminal = false);

// Makes a running `top` return after its current frame; async-signal-safe.
void RequestStop();

}  // namespace fairwatch::cli
