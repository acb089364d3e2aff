#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "cli/app.h"
#include "grpc/support/log.h"

namespace {

void OnStopSignal(int) { fairwatch::cli::RequestStop(); }

// gRPC's own log lines would break the one-line error contract; GRPC_VERBOSITY
// still brings them back for debugging.
void DiscardGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DiscardGrpcLog);
  // A second Ctrl-C kills at once, even while a call is waiting for its deadline.
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  return fairwatch::cli::RunCli(argc, argv, std::cout, std::cerr, isatty(STDOUT_FILENO) == 1);
}
