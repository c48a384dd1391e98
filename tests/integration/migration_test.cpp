// Live migration between two sevemu processes on loopback (suite 'migration'), as a QEMU user
// drives it: a target started with -incoming tcp:127.0.0.1:0 (its query-migrate names the port),
// a source whose guest is computing, QMP migrate tcp:..., and the guest must finish on the target
// with exactly what an uninterrupted run prints and exits with. Then the faults: migrate_cancel in
// the middle (the source's guest goes on, finishes right, and migrates again), the target killed
// in the middle (the source's guest goes on), a byte changed on the wire by a proxy in this test
// (the target refuses with a message and never runs the guest; the source's guest goes on).
//
// The guest is bench-memory (tests/guests/bench/memory.c): it fills and rewrites 8 MiB for about
// four seconds, so a migration happens while it writes memory, and pre-copy has dirty pages to
// send again. Compile-time paths: SEVEMU_BIN, MEMORY_GUEST.
#include "base/subprocess.h"
#include "tests/integration/qmp_connection.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// The proxy and the QMP clients write to sockets whose peer may be gone (a killed target):
// EPIPE, not SIGPIPE.
struct IgnoreSigpipe {
    IgnoreSigpipe() { std::signal(SIGPIPE, SIG_IGN); }
} const ignore_sigpipe;

std::string const& scratch()
{
    static std::string dir = [] {
        std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
        std::string tmpl = base + "/sevemu-migration-XXXXXX";
        char* d = ::mkdtemp(tmpl.data());
        REQUIRE(d);
        return std::string(d);
    }();
    static struct Cleanup {
        ~Cleanup()
        {
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
    } cleanup;
    return dir;
}

std::string path(std::string const& name) { return scratch() + "/" + name; }

std::string read_file(std::string const& p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string tag()
{
    static int n = 0;
    return std::to_string(n++);
}

std::vector<std::string> base_args(std::string const& serial_file)
{
    return { SEVEMU_BIN, "-display", "none", "-serial", "file:" + serial_file, "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-m", "64" };
}

struct Reference {
    std::string out;
    int status {};
};
Reference const& reference()
{
    static Reference ref = [] {
        std::string out = path("ref.out");
        auto argv = base_args(out);
        argv.insert(argv.end(), { "-kernel", MEMORY_GUEST });
        auto p = sevemu::Process::spawn(argv, {}, path("ref.err"));
        auto r = p.wait(120000);
        REQUIRE(r.exited);
        return Reference { read_file(out), r.status };
    }();
    return ref;
}

// A sevemu in the background with a QMP socket.
struct Vm : sevemu::testing::QmpConnection {
    std::string serial, err;
    sevemu::Process proc;

    static sevemu::Process start(std::vector<std::string> const& extra, std::string const& name)
    {
        auto argv = base_args(path(name + ".out"));
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.insert(argv.end(), { "-qmp", "unix:" + path(name + ".sock") + ",server=on,wait=off" });
        return sevemu::Process::spawn(argv, {}, path(name + ".err"));
    }
    Vm(std::vector<std::string> extra, std::string const& name)
        : serial(path(name + ".out"))
        , err(path(name + ".err"))
        , proc(start(extra, name))
    {
        open(path(name + ".sock"), 60);
        ok("migrate-set-capabilities", { { "capabilities", json::array({ { { "capability", "events" }, { "state", true } } }) } });
    }
    // The MIGRATION statuses seen up to one of `last` (QMP keeps answering meanwhile); the
    // events up to there are consumed.
    std::vector<std::string> migration_until(std::vector<std::string> const& last)
    {
        std::vector<std::string> seen;
        size_t i = 0;
        for (;;) {
            for (; i < events.size(); ++i) {
                if (events[i]["event"] != "MIGRATION")
                    continue;
                seen.push_back(events[i]["data"]["status"]);
                if (std::find(last.begin(), last.end(), seen.back()) != last.end()) {
                    events.erase(events.begin(), events.begin() + long(i) + 1); // consumed
                    return seen;
                }
            }
            json l = line();
            REQUIRE(l.contains("event"));
            events.push_back(l);
        }
    }
    std::string status() { return ok("query-status")["status"]; }
    // Polls query-migrate until `pred` holds (within 60 s).
    json migrate_info_until(std::function<bool(json const&)> pred)
    {
        auto until = std::chrono::steady_clock::now() + 60s;
        for (;;) {
            json info = ok("query-migrate");
            if (pred(info))
                return info;
            REQUIRE(std::chrono::steady_clock::now() < until);
            std::this_thread::sleep_for(20ms);
        }
    }
    int wait_exit()
    {
        auto r = proc.wait(120000);
        REQUIRE(r.exited);
        return r.status;
    }
};

// A target waiting on an ephemeral port of loopback; its query-migrate gives the port.
struct Target : Vm {
    std::string port;
    explicit Target(std::string const& name)
        : Vm({ "-incoming", "tcp:127.0.0.1:0" }, name)
    {
        json info = ok("query-migrate");
        INFO(info.dump());
        REQUIRE(info.contains("socket-address"));
        CHECK(info["socket-address"][0]["type"] == "inet");
        CHECK(info["socket-address"][0]["host"] == "127.0.0.1");
        port = info["socket-address"][0]["port"];
        CHECK(status() == "inmigrate");
    }
    std::string uri() const { return "tcp:127.0.0.1:" + port; }
};

// A source running the guest; returns once the guest has run for a while (it is computing).
struct Source : Vm {
    explicit Source(std::string const& name)
        : Vm({ "-kernel", MEMORY_GUEST }, name)
    {
        std::this_thread::sleep_for(400ms);
        CHECK(status() == "running");
    }
};

// The guest's whole output and status, split across processes, against the uninterrupted run.
void check_finished(std::string const& out, int status)
{
    auto const& ref = reference();
    CHECK(out == ref.out);
    CHECK(status == ref.status);
}

// A TCP proxy on loopback that forwards both ways and flips one bit of the byte at offset
// `flip_at` of the source-to-target direction.
struct FlipProxy {
    int listener { -1 };
    uint16_t port {};
    std::thread thread;
    std::atomic<bool> flipped { false };

    FlipProxy(uint16_t target_port, uint64_t flip_at)
    {
        listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a {};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(listener, 1) == 0);
        socklen_t len = sizeof a;
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
        thread = std::thread([this, target_port, flip_at] {
            int in = ::accept(listener, nullptr, nullptr);
            if (in < 0)
                return;
            int out = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in t {};
            t.sin_family = AF_INET;
            t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            t.sin_port = htons(target_port);
            if (::connect(out, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
                ::close(in);
                ::close(out);
                return;
            }
            uint64_t forwarded = 0;
            std::vector<char> buf(1 << 16);
            bool open_in = true, open_out = true;
            while (open_in || open_out) {
                pollfd p[2] = { { in, short(open_in ? POLLIN : 0), 0 }, { out, short(open_out ? POLLIN : 0), 0 } };
                if (::poll(p, 2, 10000) <= 0)
                    break;
                if (open_in && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                    ssize_t n = ::read(in, buf.data(), buf.size());
                    if (n <= 0) {
                        open_in = false;
                        ::shutdown(out, SHUT_WR);
                    } else {
                        if (flip_at >= forwarded && flip_at < forwarded + uint64_t(n)) {
                            buf[flip_at - forwarded] ^= 0x10;
                            flipped = true;
                        }
                        forwarded += uint64_t(n);
                        if (::write(out, buf.data(), size_t(n)) != n)
                            open_in = false;
                    }
                }
                if (open_out && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
                    ssize_t n = ::read(out, buf.data(), buf.size());
                    if (n <= 0) {
                        open_out = false;
                        ::shutdown(in, SHUT_WR);
                    } else if (::write(in, buf.data(), size_t(n)) != n) {
                        open_out = false;
                    }
                }
            }
            ::close(in);
            ::close(out);
        });
    }
    ~FlipProxy()
    {
        ::shutdown(listener, SHUT_RDWR);
        ::close(listener);
        if (thread.joinable())
            thread.join();
    }
};

} // namespace

TEST_CASE("live migration: a guest writing memory moves to another sevemu while it computes, in several pre-copy "
          "passes, and finishes there with the uninterrupted run's output",
    "[migration]")
{
    reference();
    for (int64_t downtime_limit : { int64_t(300), int64_t(0) }) {
        INFO("downtime-limit " << downtime_limit);
        std::string t = tag();
        Target dst("dst" + t);
        Source src("src" + t);
        src.ok("migrate-set-parameters", { { "downtime-limit", downtime_limit } });
        CHECK(src.ok("query-migrate-parameters")["downtime-limit"] == downtime_limit);
        src.ok("migrate", { { "uri", dst.uri() } });
        auto seen = src.migration_until({ "completed", "failed", "cancelled" });
        CHECK(seen == std::vector<std::string> { "setup", "active", "completed" });
        json info = src.ok("query-migrate");
        INFO(info.dump());
        CHECK(info["status"] == "completed");
        auto const& ram = info["ram"];
        // QEMU counts a sync at the start, one after each pass, one at the stop: more than one
        // pass happened if there are at least three.
        CHECK(ram["dirty-sync-count"].get<uint64_t>() >= 3);
        if (downtime_limit == 0) // no downtime is small enough: passes go on to the pass limit or a clean pass
            CHECK(ram["dirty-sync-count"].get<uint64_t>() >= 4);
        CHECK(ram["total"] == 64ull << 20);
        CHECK(ram["remaining"] == 0);
        CHECK(ram["precopy-bytes"].get<uint64_t>() > 0);
        CHECK(ram["downtime-bytes"].get<uint64_t>() > 0);
        CHECK(ram["transferred"] == ram["precopy-bytes"].get<uint64_t>() + ram["downtime-bytes"].get<uint64_t>());
        CHECK(ram["normal-bytes"] == ram["normal"].get<uint64_t>() * 4096);
        // Every page went at least once (pass 1), some more than once (dirtied meanwhile).
        CHECK(ram["normal"].get<uint64_t>() + ram["duplicate"].get<uint64_t>() > (64ull << 20) / 4096);
        CHECK(ram["mbps"].get<double>() > 0);
        CHECK(info.contains("downtime"));
        CHECK(info.contains("setup-time"));
        CHECK(info["total-time"].get<int64_t>() >= info["downtime"].get<int64_t>());
        CHECK(src.status() == "postmigrate");
        // The source's guest stays stopped; the target's runs to the end.
        int status = dst.wait_exit();
        check_finished(read_file(src.serial) + read_file(dst.serial), status);
        CHECK(src.status() == "postmigrate");
        src.ok("quit");
    }
}

TEST_CASE("live migration: migrate_cancel in the middle leaves the source's guest running; it migrates again and "
          "finishes right",
    "[migration]")
{
    reference();
    std::string t = tag();
    Source src("src" + t);
    std::string first_part;
    {
        Target dst("dst" + t);
        // 2 MiB/s: pass 1 takes seconds, so the cancel comes in the middle of it.
        src.ok("migrate-set-parameters", { { "max-bandwidth", 2 << 20 } });
        src.ok("migrate", { { "uri", dst.uri() } });
        src.migrate_info_until([](json const& i) {
            return i["status"] == "active" && i["ram"]["transferred"].get<uint64_t>() > (512u << 10);
        });
        json mid = src.ok("query-migrate");
        CHECK(mid["ram"]["remaining"].get<uint64_t>() > 0);
        CHECK(mid.contains("expected-downtime"));
        src.ok("migrate_cancel");
        auto seen = src.migration_until({ "cancelled", "completed", "failed" });
        CHECK(seen == std::vector<std::string> { "setup", "active", "cancelling", "cancelled" });
        CHECK(src.status() == "running");
        // The target drops the partial stream, says why, and never ran the guest.
        CHECK(dst.wait_exit() == 1);
        std::string err = read_file(dst.err);
        INFO(err);
        CHECK(err.find("sevemu: -incoming tcp:127.0.0.1:0: snapshot: the stream ended early") != std::string::npos);
        CHECK(read_file(dst.serial).empty());
    }
    // Again, to a new target, at full speed.
    Target dst2("dst2" + t);
    src.ok("migrate-set-parameters", { { "max-bandwidth", 0 } });
    src.ok("migrate", { { "uri", dst2.uri() } });
    auto seen = src.migration_until({ "completed", "failed", "cancelled" });
    CHECK(seen.back() == "completed");
    CHECK(src.status() == "postmigrate");
    int status = dst2.wait_exit();
    check_finished(read_file(src.serial) + read_file(dst2.serial), status);
    src.ok("quit");
}

TEST_CASE("live migration: the target killed in the middle fails the migration; the source's guest runs on and "
          "finishes right",
    "[migration]")
{
    reference();
    std::string t = tag();
    Source src("src" + t);
    Target dst("dst" + t);
    src.ok("migrate-set-parameters", { { "max-bandwidth", 2 << 20 } });
    src.ok("migrate", { { "uri", dst.uri() } });
    src.migrate_info_until([](json const& i) {
        return i["status"] == "active" && i["ram"]["transferred"].get<uint64_t>() > (512u << 10);
    });
    dst.proc.kill();
    auto seen = src.migration_until({ "failed", "completed", "cancelled" });
    CHECK(seen.back() == "failed");
    json info = src.ok("query-migrate");
    INFO(info.dump());
    CHECK(info["status"] == "failed");
    CHECK(info["error-desc"].get<std::string>().find("Unable to write to the migration stream") == 0);
    CHECK(src.status() == "running");
    // The guest finishes on the source, unharmed.
    CHECK(src.wait_exit() == reference().status);
    check_finished(read_file(src.serial), reference().status);
}

TEST_CASE("live migration: a byte changed on the wire is refused by the target, which never runs the guest; the "
          "source's guest runs on",
    "[migration]")
{
    reference();
    // In the header, in the first RAM section's payload, in a late RAM section, in the end record's
    // neighbourhood of the stream (at most a few MiB: the stream of this guest is larger).
    for (uint64_t flip_at : { uint64_t(5), uint64_t(300000), uint64_t(3000000) }) {
        INFO("byte " << flip_at << " flipped");
        std::string t = tag();
        Source src("src" + t);
        Target dst("dst" + t);
        FlipProxy proxy(uint16_t(std::stoul(dst.port)), flip_at);
        src.ok("migrate", { { "uri", "tcp:127.0.0.1:" + std::to_string(proxy.port) } });
        auto seen = src.migration_until({ "failed", "completed", "cancelled" });
        CHECK(seen.back() == "failed");
        CHECK(proxy.flipped);
        CHECK(dst.wait_exit() == 1);
        std::string err = read_file(dst.err);
        INFO(err);
        CHECK(err.find("sevemu: -incoming tcp:127.0.0.1:0: snapshot") != std::string::npos);
        CHECK((err.find("CRC mismatch") != std::string::npos || err.find("bad magic") != std::string::npos));
        CHECK(read_file(dst.serial).empty()); // the target's guest never ran
        CHECK(src.status() == "running");
        CHECK(src.wait_exit() == reference().status);
        check_finished(read_file(src.serial), reference().status);
    }
}

TEST_CASE("live migration: -incoming defer + migrate-incoming tcp:, and bad tcp: addresses", "[migration]")
{
    reference();
    std::string t = tag();
    Vm dst({ "-incoming", "defer" }, "dst" + t);
    CHECK(dst.status() == "inmigrate");
    dst.ok("migrate-incoming", { { "uri", "tcp:127.0.0.1:0" } });
    json info = dst.ok("query-migrate");
    REQUIRE(info.contains("socket-address"));
    std::string port = info["socket-address"][0]["port"];
    Source src("src" + t);
    json bad = src.execute("migrate", { { "uri", "tcp:127.0.0.1" } });
    CHECK(bad["error"]["desc"] == "error parsing address '127.0.0.1'");
    bad = src.execute("migrate", { { "uri", "tcp:[::1:4444" } });
    CHECK(bad["error"]["desc"] == "error parsing IPv6 address '[::1:4444'");
    // Each refused URI went setup → failed, as in QEMU.
    CHECK(src.migration_until({ "failed" }) == std::vector<std::string> { "setup", "failed" });
    CHECK(src.migration_until({ "failed" }) == std::vector<std::string> { "setup", "failed" });
    CHECK(src.status() == "running");
    src.ok("migrate", { { "uri", "tcp:127.0.0.1:" + port } });
    auto seen = src.migration_until({ "completed", "failed", "cancelled" });
    CHECK(seen.back() == "completed");
    auto dst_seen = dst.migration_until({ "completed", "failed" });
    CHECK(dst_seen.back() == "completed");
    CHECK(dst.ok("query-migrate")["status"] == "completed");
    int status = dst.wait_exit();
    check_finished(read_file(src.serial) + read_file(dst.serial), status);
    src.ok("quit");
}
