// sevemu — running the project's own programs from a program (`make demo`, end-to-end tests):
// run one to completion capturing stdout/stderr, or start one in the background.
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

namespace sevemu {

struct ProcessResult {
    bool exited {};    // ended by exit() (not by a signal)
    int status { -1 }; // exit status, or the signal number when !exited
    std::string out, err;
};

// Runs argv[0] (a path) with the arguments, feeding `input` on stdin.
ProcessResult run_capture(std::vector<std::string> const& argv, std::string const& input = {});

// A program running in the background with its stdout/stderr going to files (or inherited when
// the paths are empty). The destructor kills it if it is still running.
class Process {
public:
    static Process spawn(std::vector<std::string> const& argv, std::string const& stdout_path = {},
        std::string const& stderr_path = {});
    Process(Process&&) noexcept;
    Process& operator=(Process&&) = delete;
    ~Process();
    bool started() const { return m_pid > 0; }
    // Waits up to timeout_ms (< 0: forever) for it to end; the result has exited/status only.
    ProcessResult wait(int timeout_ms = -1);
    void kill();

private:
    explicit Process(pid_t pid) : m_pid(pid) {}
    pid_t m_pid { -1 };
    bool m_reaped {};
};

} // namespace sevemu
