// `sevemu -qmp` as a QMP client sees it: start paused, look at memory, continue, stop, quit.
// Arguments: SEVEMU_BIN SHORT_GUEST LONG_GUEST (Multiboot ELFs with isa-debug-exit).
#include "tests/integration/unix_connect.h"

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using nlohmann::json;

namespace {

struct Sevemu {
    pid_t pid { -1 };
    int fd { -1 };
    std::string pending;
    std::string sock;

    Sevemu(std::vector<std::string> extra)
    {
        sock = "/tmp/sevemu-qmp-cli-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++) + ".sock";
        std::vector<std::string> argv = { SEVEMU_BIN, "-display", "none", "-serial", "none", "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04", "-qmp", "unix:" + sock + ",server=on,wait=off" };
        argv.insert(argv.end(), extra.begin(), extra.end());
        pid = fork();
        if (pid == 0) {
            std::vector<char*> a;
            for (auto& s : argv)
                a.push_back(s.data());
            a.push_back(nullptr);
            execv(a[0], a.data());
            _exit(127);
        }
        fd = sevemu::testing::connect_unix(sock, 200, 20);
        REQUIRE(fd >= 0);
    }
    ~Sevemu()
    {
        if (fd >= 0)
            ::close(fd);
        if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
    static int& counter()
    {
        static int n = 0;
        return n;
    }
    json line()
    {
        while (true) {
            auto pos = pending.find("\r\n");
            if (pos != std::string::npos) {
                auto text = pending.substr(0, pos);
                pending.erase(0, pos + 2);
                return json::parse(text);
            }
            char buf[4096];
            ssize_t n = ::read(fd, buf, sizeof buf);
            REQUIRE(n > 0);
            pending.append(buf, size_t(n));
        }
    }
    json execute(json request)
    {
        std::string text = request.dump();
        REQUIRE(::write(fd, text.data(), text.size()) == ssize_t(text.size()));
        while (true) {
            json r = line();
            if (!r.contains("event"))
                return r;
            events.push_back(r);
        }
    }
    json next_event()
    {
        if (!events.empty()) {
            json e = events.front();
            events.erase(events.begin());
            return e;
        }
        json e = line();
        REQUIRE(e.contains("event"));
        return e;
    }
    int wait_exit()
    {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        pid = -1;
        REQUIRE(WIFEXITED(status));
        return WEXITSTATUS(status);
    }
    std::vector<json> events;
};

} // namespace

TEST_CASE("-S starts in prelaunch; pmemsave shows memory as the hypervisor sees it; cont runs the guest", "[qmp]")
{
    Sevemu vm({ "-S", "-kernel", SHORT_GUEST });
    CHECK(vm.line().contains("QMP"));
    CHECK(vm.execute({ { "execute", "qmp_capabilities" } })["return"] == json::object());
    auto st = vm.execute({ { "execute", "query-status" }, { "id", 1 } });
    CHECK(st["return"]["status"] == "prelaunch");
    CHECK(st["return"]["running"] == false);
    CHECK(st["id"] == 1);
    // The kernel is loaded at 1 MiB: its Multiboot header (magic 0x1BADB002) is in the first page.
    std::string file = "/tmp/sevemu-qmp-pmem-" + std::to_string(::getpid()) + ".bin";
    auto r = vm.execute({ { "execute", "pmemsave" }, { "arguments", { { "val", 0x100000 }, { "size", 8192 }, { "filename", file } } } });
    CHECK(r["return"] == json::object());
    std::ifstream in(file, std::ios::binary);
    std::vector<char> raw((std::istreambuf_iterator<char>(in)), {});
    std::vector<uint8_t> bytes(raw.begin(), raw.end());
    std::remove(file.c_str());
    REQUIRE(bytes.size() == 8192);
    uint8_t const magic[4] = { 0x02, 0xB0, 0xAD, 0x1B };
    CHECK(std::search(bytes.begin(), bytes.end(), magic, magic + 4) != bytes.end());
    // Bad requests: errors, and the server goes on.
    r = vm.execute({ { "execute", "pmemsave" }, { "arguments", { { "val", 0xF0000000ll }, { "size", 16 }, { "filename", file } } } });
    CHECK(r["error"]["class"] == "GenericError");
    r = vm.execute({ { "execute", "pmemsave" }, { "arguments", { { "val", 0 }, { "filename", file } } } });
    CHECK(r["error"]["desc"] == "Parameter 'size' is missing");
    CHECK(vm.execute({ { "execute", "query-sev" } })["error"]["desc"] == "SEV is not enabled");
    CHECK(vm.execute({ { "execute", "system_powerdown" } })["error"]["class"] == "GenericError");
    // system_reset: the machine goes back to the -kernel hand-off (it stays paused).
    CHECK(vm.execute({ { "execute", "system_reset" } })["return"] == json::object());
    auto reset = vm.next_event();
    CHECK(reset["event"] == "RESET");
    CHECK(reset["data"]["reason"] == "host-qmp-system-reset");
    CHECK(vm.execute({ { "execute", "query-status" } })["return"]["running"] == false);
    CHECK(vm.execute({ { "execute", "no-such-command" } })["error"]["class"] == "CommandNotFound");
    // cont: RESUME, the guest runs to its isa-debug-exit, SHUTDOWN, exit status 33.
    CHECK(vm.execute({ { "execute", "cont" } })["return"] == json::object());
    CHECK(vm.next_event()["event"] == "RESUME");
    auto shutdown = vm.next_event();
    CHECK(shutdown["event"] == "SHUTDOWN");
    CHECK(shutdown["data"]["guest"] == true);
    CHECK(vm.wait_exit() == 33);
}

TEST_CASE("stop and cont a running guest, then quit", "[qmp]")
{
    Sevemu vm({ "-kernel", LONG_GUEST });
    CHECK(vm.line().contains("QMP"));
    vm.execute({ { "execute", "qmp_capabilities" } });
    CHECK(vm.execute({ { "execute", "stop" } })["return"] == json::object());
    CHECK(vm.next_event()["event"] == "STOP");
    CHECK(vm.execute({ { "execute", "query-status" } })["return"]["status"] == "paused");
    CHECK(vm.execute({ { "execute", "cont" } })["return"] == json::object());
    CHECK(vm.next_event()["event"] == "RESUME");
    CHECK(vm.execute({ { "execute", "query-status" } })["return"]["status"] == "running");
    CHECK(vm.execute({ { "execute", "quit" } })["return"] == json::object());
    auto shutdown = vm.next_event();
    CHECK(shutdown["event"] == "SHUTDOWN");
    CHECK(shutdown["data"]["guest"] == false);
    CHECK(shutdown["data"]["reason"] == "host-qmp-quit");
    CHECK(vm.wait_exit() == 0);
}

TEST_CASE("a bad -qmp address is one error line", "[qmp]")
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = ::open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(SEVEMU_BIN, SEVEMU_BIN, "-kernel", SHORT_GUEST, "-qmp", "stdio", (char*)nullptr);
        _exit(127);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
}

// --- Issue 9: hostile clients on a real sevemu.

namespace {

// A connection the server closed makes a write fail with EPIPE (and a check fail), rather than
// killing the test without a word.
[[maybe_unused]] auto const ignore_sigpipe = std::signal(SIGPIPE, SIG_IGN);

int connect_to(std::string const& path)
{
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return s;
}

// A client that negotiates, then sends requests and never reads a reply, until the server
// stops taking them: from then on sevemu has replies queued that this client will not take.
int stuck_client(std::string const& path)
{
    int fd = connect_to(path);
    std::string req = R"({"execute":"qmp_capabilities"})";
    for (int i = 0; i < 64; ++i)
        req += R"({"execute":"query-status","id":"padding-padding-padding-padding"})";
    auto last = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - last < std::chrono::milliseconds(500)) {
        ssize_t n = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            last = std::chrono::steady_clock::now();
            req.erase(0, size_t(n)); // the rest of a partly sent request goes first
            if (req.empty())
                req = R"({"execute":"query-status","id":"padding-padding-padding-padding"})";
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break;
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    return fd;
}

// Waits up to `limit` for the process to end; its exit status, or -1 if it did not end.
int wait_exit_within(pid_t& pid, std::chrono::milliseconds limit)
{
    auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            pid = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
}

} // namespace

TEST_CASE("quit ends sevemu promptly while another client leaves its replies unread", "[qmp]")
{
    Sevemu vm({ "-kernel", LONG_GUEST });
    CHECK(vm.line().contains("QMP"));
    vm.execute({ { "execute", "qmp_capabilities" } });
    int stuck = stuck_client(vm.sock);
    CHECK(vm.execute({ { "execute", "quit" } })["return"] == json::object());
    auto start = std::chrono::steady_clock::now();
    CHECK(wait_exit_within(vm.pid, std::chrono::seconds(3)) == 0);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1500));
    ::close(stuck);
}

TEST_CASE("a guest's power-off ends sevemu promptly while a client leaves its replies unread", "[qmp]")
{
    Sevemu vm({ "-S", "-kernel", SHORT_GUEST });
    CHECK(vm.line().contains("QMP"));
    vm.execute({ { "execute", "qmp_capabilities" } });
    int stuck = stuck_client(vm.sock);
    CHECK(vm.execute({ { "execute", "cont" } })["return"] == json::object());
    // The guest runs to its isa-debug-exit (status 33) in well under a second.
    CHECK(wait_exit_within(vm.pid, std::chrono::seconds(5)) == 33);
    ::close(stuck);
}

TEST_CASE("every command refuses an argument it does not declare, and does not run", "[qmp]")
{
    Sevemu vm({ "-S", "-kernel", SHORT_GUEST });
    CHECK(vm.line().contains("QMP"));
    vm.execute({ { "execute", "qmp_capabilities" } });
    auto names = vm.execute({ { "execute", "query-commands" } })["return"];
    REQUIRE(names.size() >= 10);
    for (auto const& n : names) {
        auto name = n["name"].get<std::string>();
        // Required arguments come first in QEMU's checks: give them, then one too many.
        json args = { { "bogus", 1 } };
        if (name == "pmemsave")
            args.update({ { "val", 0 }, { "size", 1 }, { "filename", "/nonexistent/x" } });
        if (name == "sev-inject-launch-secret")
            args.update({ { "packet-header", "" }, { "secret", "" } });
        if (name == "query-sev-attestation-report")
            args["mnonce"] = "";
        if (name == "migrate" || name == "migrate-incoming")
            args["uri"] = "file:/nonexistent/x";
        if (name == "migrate-set-capabilities")
            args["capabilities"] = json::array();
        if (name == "replay-break")
            args["icount"] = 1000;
        if (name == "migrate-set-sev-info" || name == "migrate-sev-set-info")
            args.update({ { "pdh", "" }, { "plat-cert", "" }, { "amd-cert", "" } });
        auto r = vm.execute({ { "execute", name }, { "arguments", args }, { "id", name } });
        INFO(name);
        CHECK(r["error"]["class"] == "GenericError");
        CHECK(r["error"]["desc"] == "Parameter 'bogus' is unexpected");
        CHECK(r["id"] == name);
    }
    // quit with a bogus argument did not quit; the machine is still in prelaunch.
    CHECK(vm.execute({ { "execute", "query-status" } })["return"]["status"] == "prelaunch");
    // Duplicate keys: a parse error, nothing runs.
    std::string dup = R"({"execute":"query-status","execute":"quit"})";
    REQUIRE(::write(vm.fd, dup.data(), dup.size()) == ssize_t(dup.size()));
    CHECK(vm.line()["error"]["desc"] == "JSON parse error, duplicate key");
    // 100,000 deep: refused, the process lives on and answers.
    // Its ~100,000 error replies come back while it is being sent: a client must read them as
    // they come (sevemu stops reading a client whose replies pile up, QUIRKS.md), so the text
    // goes out from a thread of its own.
    std::string deep = R"({"execute":"query-status","id":)" + std::string(100000, '[') + std::string(100000, ']') + "}"
        + R"({"execute":"query-status","id":"after"})";
    ssize_t written = -1;
    std::thread writer([&] {
        size_t done = 0;
        while (done < deep.size()) {
            ssize_t n = ::send(vm.fd, deep.data() + done, deep.size() - done, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            done += size_t(n);
        }
        written = ssize_t(done);
    });
    CHECK(vm.line()["error"]["desc"] == "JSON nesting depth limit exceeded");
    while (true) {
        json r = vm.line();
        if (r.contains("return")) {
            CHECK(r["id"] == "after");
            break;
        }
        REQUIRE(r["error"]["class"] == "GenericError");
    }
    writer.join();
    CHECK(written == ssize_t(deep.size()));
    // A newline inside an unterminated string is answered at once; the next request is served.
    std::string nl = "{\"execute\":\"query-st\n{\"execute\":\"query-status\"}";
    REQUIRE(::write(vm.fd, nl.data(), nl.size()) == ssize_t(nl.size()));
    CHECK(vm.line()["error"]["desc"] == "JSON parse error, stray '\"query-st\n'");
    CHECK(vm.line()["return"]["status"] == "prelaunch");
    CHECK(vm.execute({ { "execute", "quit" } })["return"] == json::object());
    CHECK(vm.wait_exit() == 0);
}
