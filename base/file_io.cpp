#include "base/file_io.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace sevemu {

namespace fs = std::filesystem;

namespace {

std::string shown(fs::path const& p) { return p.empty() ? std::string("(empty file name)") : p.string(); }

Unexpected<FileError> file_error(FileError::Kind kind, fs::path const& p, std::string const& reason)
{
    return Unexpected<FileError>(FileError { kind, shown(p) + ": " + reason });
}

Unexpected<FileError> errno_error(fs::path const& p, std::string const& what, int err)
{
    auto kind = (err == ENOENT || err == ENOTDIR) ? FileError::Kind::NotFound : FileError::Kind::Io;
    if (err == ENOENT)
        return file_error(kind, p, "no such file");
    return file_error(kind, p, what + ": " + std::strerror(err));
}

// Why a file that exists is not a regular file, in the words ls(1) would use.
std::string not_regular_reason(mode_t mode)
{
    if (S_ISDIR(mode))
        return "is a directory";
    if (S_ISFIFO(mode))
        return "not a regular file (a FIFO)";
    if (S_ISSOCK(mode))
        return "not a regular file (a socket)";
    if (S_ISCHR(mode))
        return "not a regular file (a character device)";
    if (S_ISBLK(mode))
        return "not a regular file (a block device)";
    return "not a regular file";
}

class Fd {
public:
    explicit Fd(int fd) : m_fd(fd) {}
    Fd(Fd const&) = delete;
    Fd& operator=(Fd const&) = delete;
    ~Fd()
    {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    int get() const { return m_fd; }
    int release() { return std::exchange(m_fd, -1); }

private:
    int m_fd;
};

fs::path dir_of(fs::path const& path) { return path.parent_path().empty() ? fs::path(".") : path.parent_path(); }

// An existing output that is not a regular file is refused: rename(2) would replace a device
// node or a FIFO (running as root), and fails late on a directory.
Result<void, FileError> check_output_target(fs::path const& path)
{
    if (path.empty() || path.filename().empty())
        return file_error(FileError::Kind::NotRegular, path, "not a file name");
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return file_error(FileError::Kind::NotRegular, path, not_regular_reason(st.st_mode));
        return {};
    }
    if (errno != ENOENT)
        return file_error(FileError::Kind::Io, path, std::string("cannot create: ") + std::strerror(errno));
    struct stat dst {};
    fs::path dir = dir_of(path);
    if (::stat(dir.c_str(), &dst) != 0)
        return file_error(errno == ENOENT || errno == ENOTDIR ? FileError::Kind::NotFound : FileError::Kind::Io, path,
            "cannot create: " + (errno == ENOENT ? "no directory " + dir.string() : std::string(std::strerror(errno))));
    if (!S_ISDIR(dst.st_mode))
        return file_error(FileError::Kind::NotRegular, path, "cannot create: " + dir.string() + " is not a directory");
    return {};
}

// Writes `data` to a fresh temporary file beside `path` and syncs it; returns its name.
Result<fs::path, FileError> stage(fs::path const& path, std::span<const uint8_t> data, unsigned mode)
{
    TRY(check_output_target(path));
    fs::path tmp = temp_path_for(path, long(::getpid()));
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode_t(mode)));
    if (fd.get() < 0)
        return errno_error(tmp, "cannot create", errno);
    auto fail = [&](char const* what) {
        int err = errno;
        ::close(fd.release());
        ::unlink(tmp.c_str());
        return errno_error(tmp, what, err ? err : EIO);
    };
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail("cannot write");
        done += size_t(n);
    }
    if (::fsync(fd.get()) != 0)
        return fail("cannot sync");
    if (::close(fd.release()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return errno_error(tmp, "cannot write", err);
    }
    return tmp;
}

void sync_dir(fs::path const& dir)
{
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

} // namespace

std::string size_limit_text(uint64_t bytes)
{
    if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0)
        return std::to_string(bytes >> 30) + " GiB";
    if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0)
        return std::to_string(bytes >> 20) + " MiB";
    if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0)
        return std::to_string(bytes >> 10) + " KiB";
    return std::to_string(bytes) + "-byte";
}

Result<Bytes, FileError> read_regular_file(fs::path const& path, uint64_t max_size)
{
    if (path.empty())
        return file_error(FileError::Kind::NotFound, path, "no file name given");
    auto too_large = [&] { return file_error(FileError::Kind::TooLarge, path, "larger than the " + size_limit_text(max_size) + " limit"); };
    // stat first: open(2) itself would block on a FIFO without a writer and fail with ENXIO on
    // a socket; O_NONBLOCK and the fstat below close the race with a file swapped in between.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return errno_error(path, "cannot open", errno);
    if (!S_ISREG(st.st_mode))
        return file_error(FileError::Kind::NotRegular, path, not_regular_reason(st.st_mode));
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (fd.get() < 0)
        return errno_error(path, "cannot open", errno);
    if (::fstat(fd.get(), &st) != 0)
        return errno_error(path, "cannot open", errno);
    if (!S_ISREG(st.st_mode))
        return file_error(FileError::Kind::NotRegular, path, not_regular_reason(st.st_mode));
    if (uint64_t(st.st_size) > max_size)
        return too_large();
    Bytes out;
    out.reserve(size_t(st.st_size));
    // Bounded: one byte past the limit is enough to know the file grew beyond it.
    uint8_t buf[65536];
    for (;;) {
        uint64_t room = max_size - out.size(); // out.size() <= max_size here
        size_t want = room >= sizeof buf ? sizeof buf : size_t(room) + 1;
        ssize_t n = ::read(fd.get(), buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno_error(path, "cannot read", errno);
        if (n == 0)
            break;
        out.insert(out.end(), buf, buf + n);
        if (out.size() > max_size)
            return too_large();
    }
    return out;
}

fs::path temp_path_for(fs::path const& path, long pid)
{
    std::string name(1, '.');
    name.append(path.filename().string()).append(".tmp.").append(std::to_string(pid));
    return dir_of(path) / name;
}

Result<void, FileError> write_file_atomic(fs::path const& path, std::span<const uint8_t> data, unsigned mode)
{
    fs::path tmp = TRY(stage(path, data, mode));
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return errno_error(path, "cannot replace", err);
    }
    sync_dir(dir_of(path));
    return {};
}

Result<void, FileError> write_files_atomic(std::vector<OutputFile> const& files)
{
    std::set<fs::path> seen;
    std::error_code ec;
    for (auto const& f : files)
        if (!seen.insert(fs::absolute(f.path, ec).lexically_normal()).second)
            return file_error(FileError::Kind::Io, f.path, "named for two outputs");
    std::vector<fs::path> staged;
    auto drop_staged = [&](size_t from) {
        for (size_t i = from; i < staged.size(); ++i)
            ::unlink(staged[i].c_str());
    };
    for (auto const& f : files) {
        auto tmp = stage(f.path, f.data, f.mode);
        if (!tmp) {
            drop_staged(0);
            return make_unexpected(std::move(tmp).error());
        }
        staged.push_back(std::move(*tmp));
    }
    // An output that exists keeps a hard link (.NAME.old.tmp.PID, which remove_stale_temp_files
    // knows as litter) until every rename has happened, so that a failed rename can put the
    // earlier file back instead of losing it.
    std::vector<fs::path> kept(files.size());
    auto drop_kept = [&] {
        for (auto const& k : kept)
            if (!k.empty())
                ::unlink(k.c_str());
    };
    for (size_t i = 0; i < files.size(); ++i) {
        std::string name(1, '.');
        name.append(files[i].path.filename().string()).append(".old.tmp.").append(std::to_string(::getpid()));
        fs::path old = dir_of(files[i].path) / name;
        ::unlink(old.c_str());
        if (::link(files[i].path.c_str(), old.c_str()) == 0)
            kept[i] = std::move(old);
    }
    for (size_t i = 0; i < files.size(); ++i) {
        if (::rename(staged[i].c_str(), files[i].path.c_str()) != 0) {
            int err = errno;
            // Not all outputs can appear: take back the ones that did, restoring what was there.
            for (size_t j = 0; j < i; ++j) {
                if (kept[j].empty() || ::rename(kept[j].c_str(), files[j].path.c_str()) != 0)
                    ::unlink(files[j].path.c_str());
                else
                    kept[j].clear();
            }
            drop_staged(i);
            drop_kept();
            return errno_error(files[i].path, "cannot replace", err);
        }
    }
    drop_kept();
    std::set<fs::path> dirs;
    for (auto const& f : files)
        dirs.insert(dir_of(f.path));
    for (auto const& d : dirs)
        sync_dir(d);
    return {};
}

size_t remove_stale_temp_files(fs::path const& dir)
{
    std::error_code ec;
    size_t removed = 0;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        std::string name = it->path().filename().string();
        auto at = name.rfind(".tmp.");
        if (name.size() < 2 || name[0] != '.' || at == std::string::npos || at == 0)
            continue;
        std::string digits = name.substr(at + 5);
        if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
            continue;
        long pid = std::stol(digits); // at most 9 digits: cannot overflow
        if (pid <= 0 || pid == long(::getpid()))
            continue;
        // A live process may still be writing it (PID reuse only makes us keep litter).
        if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH)
            continue;
        if (it->is_regular_file(ec) && fs::remove(it->path(), ec))
            ++removed;
    }
    return removed;
}

} // namespace sevemu
