// Subprocesses with fork/exec and pipes (see subprocess.h).
#include "base/subprocess.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace sevemu {

namespace {
[[noreturn]] void exec_or_die(std::vector<std::string> const& argv)
{
    std::vector<char*> args;
    for (auto const& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
}
void decode(int wstatus, ProcessResult& r)
{
    r.exited = WIFEXITED(wstatus);
    r.status = r.exited ? WEXITSTATUS(wstatus) : WTERMSIG(wstatus);
}
} // namespace

ProcessResult run_capture(std::vector<std::string> const& argv, std::string const& input)
{
    ProcessResult r;
    int out_pipe[2], err_pipe[2], in_pipe[2];
    if (::pipe(out_pipe) || ::pipe(err_pipe) || ::pipe(in_pipe)) {
        r.err = std::string("pipe: ") + std::strerror(errno);
        return r;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(in_pipe[0], 0);
        ::dup2(out_pipe[1], 1);
        ::dup2(err_pipe[1], 2);
        for (int fd : { in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1] })
            ::close(fd);
        exec_or_die(argv);
    }
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    if (!input.empty())
        (void)!::write(in_pipe[1], input.data(), input.size());
    ::close(in_pipe[1]);
    pollfd fds[2] = { { out_pipe[0], POLLIN, 0 }, { err_pipe[0], POLLIN, 0 } };
    std::string* sinks[2] = { &r.out, &r.err };
    int open_fds = 2;
    while (open_fds > 0) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[65536];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[i]->append(buf, size_t(n));
            } else {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    int wstatus = 0;
    ::waitpid(pid, &wstatus, 0);
    decode(wstatus, r);
    return r;
}

Process Process::spawn(std::vector<std::string> const& argv, std::string const& stdout_path, std::string const& stderr_path)
{
    pid_t pid = ::fork();
    if (pid == 0) {
        auto redirect = [](std::string const& path, int fd) {
            if (path.empty())
                return;
            int f = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (f >= 0) {
                ::dup2(f, fd);
                ::close(f);
            }
        };
        redirect(stdout_path, 1);
        redirect(stderr_path, 2);
        exec_or_die(argv);
    }
    return Process(pid);
}

Process::Process(Process&& o) noexcept : m_pid(o.m_pid), m_reaped(o.m_reaped) { o.m_pid = -1; }

Process::~Process()
{
    if (m_pid > 0 && !m_reaped) {
        kill();
        wait();
    }
}

ProcessResult Process::wait(int timeout_ms)
{
    ProcessResult r;
    if (m_pid <= 0 || m_reaped)
        return r;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
        int wstatus = 0;
        pid_t got = ::waitpid(m_pid, &wstatus, timeout_ms < 0 ? 0 : WNOHANG);
        if (got == m_pid) {
            m_reaped = true;
            decode(wstatus, r);
            return r;
        }
        if (got < 0 && errno != EINTR)
            return r;
        if (timeout_ms >= 0 && std::chrono::steady_clock::now() > deadline)
            return r; // still running: exited = false, status = -1
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

void Process::kill()
{
    if (m_pid > 0 && !m_reaped)
        ::kill(m_pid, SIGKILL);
}

} // namespace sevemu
