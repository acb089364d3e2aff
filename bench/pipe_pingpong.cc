// Context-switch-heavy worst case: two processes bounce one byte over a pair
// of pipes. Prints round trips per second; run with and without the agent.
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace {

double NowS() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  char* end = nullptr;
  const long rounds = argc > 1 ? std::strtol(argv[1], &end, 10) : 200000;
  if (argc > 1 && (end == argv[1] || *end != '\0')) {
    std::fprintf(stderr, "usage: %s [round-trips > 0]\n", argv[0]);
    return 2;
  }
  if (rounds <= 0) {
    std::fprintf(stderr, "usage: %s [round-trips > 0]\n", argv[0]);
    return 2;
  }
  int ping[2];
  int pong[2];
  if (pipe(ping) != 0 || pipe(pong) != 0) {
    std::perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  char byte = 0;
  if (child == 0) {
    for (long i = 0; i < rounds; ++i) {
      if (read(ping[0], &byte, 1) != 1 || write(pong[1], &byte, 1) != 1) _exit(1);
    }
    _exit(0);
  }
  const double start = NowS();
  for (long i = 0; i < rounds; ++i) {
    if (write(ping[1], &byte, 1) != 1 || read(pong[0], &byte, 1) != 1) {
      std::perror("ping-pong");
      return 1;
    }
  }
  const double elapsed = NowS() - start;
  waitpid(child, nullptr, 0);
  std::printf("%.0f round-trips/s (%.2f us each, %ld rounds)\n", rounds / elapsed,
              elapsed / rounds * 1e6, rounds);
  return 0;
}
