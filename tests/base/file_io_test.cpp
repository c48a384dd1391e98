// base/file_io.h: what is refused before a byte is read, the size limits (also for a file
// whose size fstat does not tell), all-or-none writes, and the cleanup of a killed writer's
// temporary files.
#include "base/file_io.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace sevemu;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string templ = (fs::temp_directory_path() / "sevemu-file-io-XXXXXX").string();
        REQUIRE(::mkdtemp(templ.data()));
        path = templ;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void spit(fs::path const& p, std::string const& s) { std::ofstream(p, std::ios::binary) << s; }

std::string slurp(fs::path const& p)
{
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// The PID of a process that has ended and been reaped.
long dead_pid()
{
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        ::_exit(0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return long(pid);
}

std::vector<std::string> names_in(fs::path const& dir)
{
    std::vector<std::string> out;
    for (auto const& e : fs::directory_iterator(dir))
        out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace

TEST_CASE("read_regular_file reads a regular file within its limit", "[base][file_io]")
{
    TempDir t;
    spit(t.path / "f", "hello");
    auto r = read_regular_file(t.path / "f", 5);
    REQUIRE(r);
    CHECK(std::string(r->begin(), r->end()) == "hello");
    spit(t.path / "empty", "");
    auto e = read_regular_file(t.path / "empty", 5);
    REQUIRE(e);
    CHECK(e->empty());
}

TEST_CASE("read_regular_file refuses what is not a regular file, naming the file and the reason", "[base][file_io]")
{
    TempDir t;
    auto dir = read_regular_file(t.path, 1 << 20);
    REQUIRE_FALSE(dir);
    CHECK(dir.error().kind == FileError::Kind::NotRegular);
    CHECK(dir.error().message == t.path.string() + ": is a directory");

    auto zero = read_regular_file("/dev/zero", 1 << 20);
    REQUIRE_FALSE(zero);
    CHECK(zero.error().kind == FileError::Kind::NotRegular);
    CHECK(zero.error().message == "/dev/zero: not a regular file (a character device)");

    // A FIFO without a writer: refused at once, not a blocked open.
    REQUIRE(::mkfifo((t.path / "fifo").c_str(), 0600) == 0);
    auto fifo = read_regular_file(t.path / "fifo", 1 << 20);
    REQUIRE_FALSE(fifo);
    CHECK(fifo.error().message == (t.path / "fifo").string() + ": not a regular file (a FIFO)");

    // A listening Unix socket (open(2) would fail with ENXIO).
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(s >= 0);
    sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    std::string sock = (t.path / "sock").string();
    REQUIRE(sock.size() < sizeof sa.sun_path);
    std::copy(sock.begin(), sock.end(), sa.sun_path);
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    auto so = read_regular_file(sock, 1 << 20);
    ::close(s);
    REQUIRE_FALSE(so);
    CHECK(so.error().message == sock + ": not a regular file (a socket)");

    auto missing = read_regular_file(t.path / "missing", 1 << 20);
    REQUIRE_FALSE(missing);
    CHECK(missing.error().kind == FileError::Kind::NotFound);
    CHECK(missing.error().message == (t.path / "missing").string() + ": no such file");

    auto empty_name = read_regular_file("", 1 << 20);
    REQUIRE_FALSE(empty_name);
    CHECK(empty_name.error().message.find("no file name") != std::string::npos);
}

TEST_CASE("read_regular_file enforces the limit from the size and while reading", "[base][file_io]")
{
    TempDir t;
    spit(t.path / "six", "123456");
    auto over = read_regular_file(t.path / "six", 5);
    REQUIRE_FALSE(over);
    CHECK(over.error().kind == FileError::Kind::TooLarge);
    CHECK(over.error().message == (t.path / "six").string() + ": larger than the 5-byte limit");

    // A sparse 4 GiB file costs no disk and must cost no memory: refused from its size.
    {
        std::ofstream(t.path / "sparse").close();
        fs::resize_file(t.path / "sparse", 4ull << 30);
    }
    auto sparse = read_regular_file(t.path / "sparse", 1ull << 30);
    REQUIRE_FALSE(sparse);
    CHECK(sparse.error().message == (t.path / "sparse").string() + ": larger than the 1 GiB limit");

    // A regular file whose size fstat does not know (procfs reports 0, as a file that grows
    // while it is read would start): the read itself stops one byte past the limit.
    struct stat st {};
    REQUIRE(::stat("/proc/self/status", &st) == 0);
    REQUIRE(S_ISREG(st.st_mode));
    REQUIRE(st.st_size == 0);
    auto proc = read_regular_file("/proc/self/status", 64);
    REQUIRE_FALSE(proc);
    CHECK(proc.error().kind == FileError::Kind::TooLarge);
    auto whole = read_regular_file("/proc/self/status", 1 << 20);
    REQUIRE(whole);
    CHECK(whole->size() > 64);
}

TEST_CASE("size_limit_text", "[base][file_io]")
{
    CHECK(size_limit_text(file_limits::kKernel) == "256 MiB");
    CHECK(size_limit_text(file_limits::kModule) == "1 GiB");
    CHECK(size_limit_text(file_limits::kSevCert) == "2084-byte");
    CHECK(size_limit_text(file_limits::kNvState) == "32 KiB");
}

TEST_CASE("write_file_atomic replaces a file and leaves no temporary file", "[base][file_io]")
{
    TempDir t;
    spit(t.path / "out", "old");
    std::string text = "new contents";
    REQUIRE(write_file_atomic(t.path / "out", std::span(reinterpret_cast<uint8_t const*>(text.data()), text.size()), 0644));
    CHECK(slurp(t.path / "out") == text);
    CHECK((fs::status(t.path / "out").permissions() & fs::perms::others_read) != fs::perms::none);
    CHECK(names_in(t.path) == std::vector<std::string> { "out" });
    REQUIRE(write_file_atomic(t.path / "secret", Bytes { 1, 2, 3 }));
    CHECK((fs::status(t.path / "secret").permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
}

TEST_CASE("write_file_atomic never replaces what is not a regular file", "[base][file_io]")
{
    TempDir t;
    fs::create_directory(t.path / "d");
    auto d = write_file_atomic(t.path / "d", Bytes { 1 });
    REQUIRE_FALSE(d);
    CHECK(d.error().message == (t.path / "d").string() + ": is a directory");
    REQUIRE(::mkfifo((t.path / "fifo").c_str(), 0600) == 0);
    auto f = write_file_atomic(t.path / "fifo", Bytes { 1 });
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("FIFO") != std::string::npos);
    CHECK(fs::is_fifo(t.path / "fifo"));
    // /dev/null stays a device (rename(2) would replace it when run as root).
    auto null = write_file_atomic("/dev/null", Bytes { 1 });
    REQUIRE_FALSE(null);
    CHECK(fs::is_character_file("/dev/null"));
    auto nodir = write_file_atomic(t.path / "no" / "such" / "x", Bytes { 1 });
    REQUIRE_FALSE(nodir);
    CHECK(nodir.error().message.find("cannot create") != std::string::npos);
    CHECK(names_in(t.path) == std::vector<std::string> { "d", "fifo" });
}

TEST_CASE("write_files_atomic writes every file or none", "[base][file_io]")
{
    TempDir t;
    fs::create_directory(t.path / "a");
    spit(t.path / "a" / "keep", "previous");
    // The second output cannot be written: the first does not appear, the existing file it
    // would have replaced is untouched, and no temporary file is left.
    auto r = write_files_atomic({ { t.path / "a" / "keep", Bytes { 'n', 'e', 'w' } }, { t.path / "a" / "fresh", Bytes { 1 } },
        { t.path / "missing-dir" / "x", Bytes { 2 } } });
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find((t.path / "missing-dir" / "x").string()) == 0);
    CHECK(slurp(t.path / "a" / "keep") == "previous");
    CHECK(names_in(t.path / "a") == std::vector<std::string> { "keep" });
    // The same path twice is refused before anything is written.
    auto twice = write_files_atomic({ { t.path / "a" / "x", Bytes { 1 } }, { t.path / "a" / ".." / "a" / "x", Bytes { 2 } } });
    REQUIRE_FALSE(twice);
    CHECK(names_in(t.path / "a") == std::vector<std::string> { "keep" });
    // All good: all written.
    REQUIRE(write_files_atomic({ { t.path / "a" / "keep", Bytes { 'n', 'e', 'w' } }, { t.path / "b1", Bytes { 1 } } }));
    CHECK(slurp(t.path / "a" / "keep") == "new");
    CHECK(slurp(t.path / "b1") == std::string(1, '\1'));
}

TEST_CASE("remove_stale_temp_files removes only a dead writer's temporary files", "[base][file_io]")
{
    TempDir t;
    long dead = dead_pid();
    auto dead_tmp = temp_path_for(t.path / "nv.bin", dead);
    CHECK(dead_tmp.filename().string() == ".nv.bin.tmp." + std::to_string(dead));
    spit(dead_tmp, "torn");
    spit(temp_path_for(t.path / "chip.id", dead), "torn");
    spit(temp_path_for(t.path / "live", long(::getppid())), "in flight"); // a live process
    spit(temp_path_for(t.path / "mine", long(::getpid())), "in flight");  // this process
    spit(t.path / "nv.bin", "data");
    spit(t.path / ".hidden", "not a temporary file");
    spit(t.path / ".x.tmp.notapid", "not ours");
    CHECK(remove_stale_temp_files(t.path) == 2);
    auto names = names_in(t.path);
    std::vector<std::string> want { ".hidden", ".live.tmp." + std::to_string(::getppid()),
        ".mine.tmp." + std::to_string(::getpid()), ".x.tmp.notapid", "nv.bin" };
    std::sort(want.begin(), want.end());
    CHECK(names == want);
    CHECK(remove_stale_temp_files(t.path / "no-such-dir") == 0);
}
