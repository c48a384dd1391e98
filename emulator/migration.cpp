#include "emulator/migration.h"

#include "base/state_stream.h"
#include "emulator/machine.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <boost/asio.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fmt/format.h>
#include <future>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace sevemu::emulator {

namespace {

using Clock = std::chrono::steady_clock;

// Socket buffers of a live migration (SO_SNDBUF at the source, SO_RCVBUF at the target), instead
// of the kernel's autotuning up to net.ipv4.tcp_wmem/tcp_rmem (4 and 6 MiB): what sits in them
// and in the target's apply queue when the source stops is still to be applied then, so it counts
// in the downtime (an SEV target, which checks a MAC and re-encrypts every page, is the slower
// end). 1 MiB each keeps loopback and LAN links busy.
constexpr int kSocketBuffer = 1 << 20;

int64_t ms_since(Clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// QEMU's other network and fd transports: valid URIs to QEMU that sevemu does not offer.
std::optional<std::string> unsupported_transport(std::string_view uri)
{
    for (std::string_view p : { "unix:", "vsock:", "fd:", "rdma:" })
        if (starts_with(uri, p))
            return fmt::format("migration over {} is unsupported: sevemu migrates over tcp:HOST:PORT and writes snapshots to "
                               "file:PATH or exec:CMD (QUIRKS.md)",
                p.substr(0, p.size() - 1));
    return std::nullopt;
}

// "tcp:HOST:PORT", "tcp:[IPV6]:PORT"; QEMU 7.2 util/qemu-sockets.c inet_parse()'s message for
// an address it cannot split. An empty host listens on every address (incoming only).
std::optional<Result<MigrationUri, std::string>> tcp_uri(std::string_view uri, bool incoming)
{
    if (!starts_with(uri, "tcp:"))
        return std::nullopt;
    std::string_view rest = uri.substr(4);
    auto bad = [&] { return Unexpected(fmt::format("error parsing address '{}'", rest)); };
    std::string host;
    std::string_view port;
    if (starts_with(rest, "[")) {
        auto close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
            return Unexpected(fmt::format("error parsing IPv6 address '{}'", rest));
        host = std::string(rest.substr(1, close - 1));
        port = rest.substr(close + 2);
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string_view::npos)
            return bad();
        host = std::string(rest.substr(0, colon));
        port = rest.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return bad();
    unsigned long n = std::stoul(std::string(port));
    if (n > 65535 || (!incoming && n == 0) || (!incoming && host.empty()))
        return bad();
    return MigrationUri { MigrationUri::Kind::Tcp, host, uint16_t(n) };
}

std::optional<MigrationUri> offline_uri(std::string_view uri)
{
    if (starts_with(uri, "file:"))
        return MigrationUri { MigrationUri::Kind::File, std::string(uri.substr(5)) };
    if (starts_with(uri, "exec:"))
        return MigrationUri { MigrationUri::Kind::Exec, std::string(uri.substr(5)) };
    return std::nullopt;
}

// `/bin/sh -c CMD` with one end of a pipe as its stdin (outgoing) or stdout (incoming) and
// /dev/null as the other (QEMU io/channel-command.c: an O_WRONLY command's stdout is /dev/null,
// an O_RDONLY command's stdin). stderr is inherited. Returns our end of the pipe.
struct Child {
    pid_t pid { -1 };
    int fd { -1 };
};
Result<Child, std::string> spawn_shell(std::string const& command, bool child_reads)
{
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        return Unexpected(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
    int child_end = child_reads ? p[0] : p[1];
    int our_end = child_reads ? p[1] : p[0];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child_end, child_reads ? STDIN_FILENO : STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, child_reads ? STDOUT_FILENO : STDIN_FILENO, "/dev/null",
        child_reads ? O_WRONLY : O_RDONLY, 0);
    // The child starts with the default SIGPIPE action whatever this process does with it.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &def);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    // Its own process group, so that a cancel ends the whole command (`sleep 9; cat > f` too,
    // whose children would otherwise hold the pipe and our stdout open).
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
    char* argv[] = { sh.data(), dash_c.data(), cmd.data(), nullptr };
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(child_end);
    if (rc != 0) {
        ::close(our_end);
        return Unexpected(fmt::format("cannot run /bin/sh: {}", std::strerror(rc)));
    }
    return Child { pid, our_end };
}

// The end of an exec: command: "" if it exited with status 0.
std::string child_verdict(int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return {};
    if (WIFEXITED(status))
        return fmt::format("the command exited with status {}", WEXITSTATUS(status));
    return fmt::format("the command was killed by signal {}", WTERMSIG(status));
}

// Guest RAM's zero and non-zero pages, for query-migrate's "duplicate" and "normal" (QEMU counts
// zero pages as "duplicate" and sends them as a flag only; sevemu's stream elides them too).
void count_pages(Machine& m, MigrationRamStats& ram)
{
    auto& mc = m.memory();
    std::array<uint8_t, 4096> page {};
    uint64_t total = 0, zero = 0;
    for (auto const& r : mc.ranges()) {
        for (uint64_t off = 0; off + page.size() <= r.size; off += page.size()) {
            ++total;
            if (!mc.read(Spa(r.base.value + off), page, mmu::KeyId::none()))
                continue;
            if (std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0; }))
                ++zero;
        }
    }
    ram.total = total * page.size();
    ram.duplicate = zero;
    ram.normal = total - zero;
    ram.normal_bytes = ram.normal * page.size();
}

} // namespace

std::string_view migration_status_name(MigrationStatus s)
{
    switch (s) {
    case MigrationStatus::None: return "none";
    case MigrationStatus::Setup: return "setup";
    case MigrationStatus::Cancelling: return "cancelling";
    case MigrationStatus::Cancelled: return "cancelled";
    case MigrationStatus::Active: return "active";
    case MigrationStatus::Completed: return "completed";
    case MigrationStatus::Failed: return "failed";
    }
    return "none";
}

Result<MigrationUri, std::string> parse_outgoing_uri(std::string_view uri)
{
    if (auto u = offline_uri(uri))
        return *u;
    if (auto t = tcp_uri(uri, false))
        return *t;
    if (auto why = unsupported_transport(uri))
        return Unexpected(*why);
    // QEMU 7.2 qmp_migrate(): QERR_INVALID_PARAMETER_VALUE, "uri", "a valid migration protocol".
    return Unexpected(std::string("Parameter 'uri' expects a valid migration protocol"));
}

Result<MigrationUri, std::string> parse_incoming_uri(std::string_view uri)
{
    if (auto u = offline_uri(uri))
        return *u;
    if (auto t = tcp_uri(uri, true))
        return *t;
    if (auto why = unsupported_transport(uri))
        return Unexpected(*why);
    // QEMU 7.2 qemu_start_incoming_migration().
    return Unexpected(fmt::format("unknown migration protocol: {}", uri));
}

Result<std::vector<uint8_t>, std::string> read_incoming_stream(MigrationUri const& uri, uint64_t limit,
    std::function<void(int pid)> const& spawned)
{
    int fd = -1;
    pid_t pid = -1;
    if (uri.kind == MigrationUri::Kind::File) {
        // O_NONBLOCK only for the open: a FIFO without a writer must not hang it.
        fd = ::open(uri.target.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return Unexpected(fmt::format("Unable to open {}: {}", uri.target, std::strerror(errno)));
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            ::close(fd);
            return Unexpected(fmt::format("Unable to read {}: Is a directory", uri.target));
        }
    } else {
        auto child = spawn_shell(uri.target, false);
        if (!child)
            return Unexpected(child.error());
        fd = child->fd;
        pid = child->pid;
        if (spawned)
            spawned(pid);
    }
    std::vector<uint8_t> out;
    std::string error;
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            error = fmt::format("read error: {}", std::strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (out.size() + uint64_t(n) > limit) {
            error = fmt::format("the stream is larger than any snapshot of this machine can be ({} bytes)", limit);
            break;
        }
        out.insert(out.end(), buf.begin(), buf.begin() + n);
    }
    ::close(fd);
    if (pid > 0) {
        if (!error.empty())
            ::kill(-pid, SIGKILL);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) { }
        if (error.empty())
            error = child_verdict(status);
    }
    if (!error.empty())
        return Unexpected(error);
    return out;
}

std::span<char const* const> migration_capability_names()
{
    // QEMU 7.2 qapi/migration.json MigrationCapability, in declaration order.
    static constexpr char const* kNames[] = { "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress",
        "events", "postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover",
        "multifd", "dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid",
        "background-snapshot", "zero-copy-send", "postcopy-preempt" };
    return kNames;
}

// The writer or reader thread, and what it needs to be stopped from outside.
struct Migration::Job {
    std::thread thread;
    std::atomic<bool> cancel { false };
    std::mutex mutex; // guards child, socket
    pid_t child { -1 };
    int socket { -1 }; // the TCP connection or listener the thread blocks on
    // -incoming tcp: the listener, bound before run() so that a bad address is a start-up error.
    boost::asio::io_context io;
    std::optional<boost::asio::ip::tcp::acceptor> acceptor;
    void kill_child()
    {
        std::lock_guard lock(mutex);
        if (child > 0)
            ::kill(-child, SIGKILL); // the command's process group (spawn_shell)
        // A blocked connect, read, write or accept returns at once (shutdown() is the one
        // thread-safe way to end another thread's blocking socket call).
        if (socket >= 0)
            ::shutdown(socket, SHUT_RDWR);
    }
    void set_socket(int fd)
    {
        std::lock_guard lock(mutex);
        socket = fd;
        if (cancel && fd >= 0)
            ::shutdown(fd, SHUT_RDWR);
    }
};

Migration::Migration(Machine& machine, EventSink emit)
    : m_machine(machine)
    , m_emit(std::move(emit))
{
}

Migration::~Migration() { shutdown(); }

void Migration::shutdown()
{
    if (m_job) {
        m_job->cancel = true;
        m_job->kill_child();
        if (m_job->thread.joinable())
            m_job->thread.join();
    }
}

bool Migration::capability(std::string_view name) const
{
    std::lock_guard lock(m_mutex);
    return name == "events" && m_events;
}

Result<void, std::string> Migration::set_capabilities(std::vector<std::pair<std::string, bool>> const& caps)
{
    std::lock_guard lock(m_mutex);
    // QEMU 7.2 qmp_migrate_set_capabilities(): refused while an outgoing migration runs
    // (QERR_MIGRATION_ACTIVE); a destination sets its capabilities before or while it waits.
    if (m_outgoing && (m_status == MigrationStatus::Setup || m_status == MigrationStatus::Active || m_status == MigrationStatus::Cancelling))
        return Unexpected(std::string("There's a migration process in progress"));
    std::optional<bool> events;
    // (No structured binding: clang before 16 cannot capture one in a lambda.)
    for (auto const& cap : caps) {
        std::string const& name = cap.first;
        bool on = cap.second;
        auto names = migration_capability_names();
        if (std::find_if(names.begin(), names.end(), [&](char const* n) { return name == n; }) == names.end())
            return Unexpected(fmt::format("Parameter 'capability' does not accept value '{}'", name));
        if (name == "events")
            events = on;
        else if (on)
            return Unexpected(fmt::format("Migration capability '{}' is not supported by sevemu (only 'events' is)", name));
    }
    if (events)
        m_events = *events;
    return {};
}

void Migration::set_status(MigrationStatus s)
{
    bool events;
    {
        std::lock_guard lock(m_mutex);
        if (m_status == s)
            return;
        m_status = s;
        events = m_events;
    }
    if (events && m_emit)
        m_emit(s);
}

MigrationInfo Migration::info() const
{
    std::lock_guard lock(m_mutex);
    MigrationInfo info;
    // QEMU lists the migration blockers whatever the status (fill_source_migration_info); a
    // machine still waiting for its own snapshot has none (QEMU's migrate gives "Guest is
    // waiting for an incoming migration" there instead).
    if (m_run_state != MigrationRunState::InMigrate)
        if (auto b = m_machine.migration_blocker(true))
            info.blocked_reasons.push_back(*b);
    info.status = m_status;
    if (!m_outgoing) {
        // fill_destination_migration_info(): the status, and the listening address of a
        // tcp: incoming migration.
        info.socket_address = m_listen_address;
        return info;
    }
    switch (m_status) {
    case MigrationStatus::None:
    case MigrationStatus::Setup:
    case MigrationStatus::Cancelled:
        break;
    case MigrationStatus::Active:
    case MigrationStatus::Cancelling:
        info.setup_time_ms = m_setup_ms;
        info.total_time_ms = ms_since(m_start);
        // QEMU's initial estimate is the downtime limit; a live migration measures its own.
        info.expected_downtime_ms = m_expected_downtime_ms;
        info.ram = m_ram;
        break;
    case MigrationStatus::Completed:
        info.setup_time_ms = m_setup_ms;
        info.total_time_ms = m_total_ms;
        info.downtime_ms = m_downtime_ms;
        info.ram = m_ram;
        break;
    case MigrationStatus::Failed:
        if (!m_error.empty())
            info.error_desc = m_error;
        break;
    }
    return info;
}

Result<void, std::string> Migration::migrate(std::string_view uri_text)
{
    // QEMU 7.2 migrate_prepare(), in its order (the first check is about the outgoing job).
    {
        std::lock_guard lock(m_mutex);
        if (m_outgoing && (m_status == MigrationStatus::Setup || m_status == MigrationStatus::Active || m_status == MigrationStatus::Cancelling))
            return Unexpected(std::string("There's a migration process in progress"));
    }
    if (m_run_state == MigrationRunState::InMigrate)
        return Unexpected(std::string("Guest is waiting for an incoming migration"));
    if (m_run_state == MigrationRunState::PostMigrate)
        return Unexpected(std::string("Can't migrate the vm that was paused due to previous migration"));
    if (auto b = m_machine.migration_blocker(starts_with(uri_text, "tcp:")))
        return Unexpected(*b);

    if (m_job && m_job->thread.joinable())
        m_job->thread.join(); // the previous job has ended (its status is final)
    {
        std::lock_guard lock(m_mutex);
        m_outgoing = true;
        m_live = starts_with(uri_text, "tcp:");
        m_expected_downtime_ms = m_downtime_limit_ms;
        m_start = Clock::now();
        m_ram = {};
        m_error.clear();
        m_setup_ms = m_total_ms = m_downtime_ms = 0;
    }
    // migrate_init(): none → setup.
    set_status(MigrationStatus::Setup);
    auto fail = [&](std::string message) -> Result<void, std::string> {
        {
            std::lock_guard lock(m_mutex);
            m_error = message;
        }
        set_status(MigrationStatus::Failed);
        return Unexpected(std::move(message));
    };
    auto uri = parse_outgoing_uri(uri_text);
    if (!uri) {
        // QEMU: the error, and setup → failed without an error description.
        set_status(MigrationStatus::Failed);
        return Unexpected(uri.error());
    }
    auto job = std::make_shared<Job>();
    if (uri->kind == MigrationUri::Kind::Tcp) {
        // Live: the guest runs on; the job's thread connects, and its status goes on from
        // "setup" (QEMU: setup lasts until the connection is up and the first sync is done).
        m_vm_was_running = !m_machine.paused();
        m_job = job;
        job->thread = std::thread([this, job, u = *uri] { run_tcp_source(job, u); });
        return {};
    }
    int fd = -1;
    if (uri->kind == MigrationUri::Kind::File) {
        // QEMU 8.2 migration/file.c: the file is created or truncated, mode 0666 less the umask.
        fd = ::open(uri->target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd < 0)
            return fail(fmt::format("Unable to open {}: {}", uri->target, std::strerror(errno)));
    } else {
        auto child = spawn_shell(uri->target, true);
        if (!child)
            return fail(child.error());
        fd = child->fd;
        job->child = child->pid;
    }

    // The offline snapshot: the machine stops for the copy (QEMU's vm_stop_force_state(
    // RUN_STATE_FINISH_MIGRATE), which sends STOP), the stream is made in memory, and the
    // writer copies it out while QMP goes on answering.
    m_vm_was_running = !m_machine.paused();
    {
        std::lock_guard lock(m_mutex);
        m_setup_ms = ms_since(m_start);
    }
    set_status(MigrationStatus::Active);
    auto stopped_at = Clock::now();
    m_machine.pause();
    m_run_state = MigrationRunState::FinishMigrate;
    MigrationRamStats ram;
    count_pages(m_machine, ram);
    auto stream = m_machine.save_snapshot();
    if (!stream) {
        ::close(fd);
        job->kill_child();
        if (job->child > 0)
            ::waitpid(job->child, nullptr, 0);
        {
            std::lock_guard lock(m_mutex);
            m_error = stream.error().message;
        }
        set_status(MigrationStatus::Failed);
        // migration_iteration_finish(): the guest runs again if it ran before.
        if (m_vm_was_running) {
            m_run_state = MigrationRunState::None;
            m_machine.resume();
        } else {
            m_run_state = MigrationRunState::PostMigrate;
        }
        return {};
    }
    ram.remaining = ram.normal_bytes;
    ram.dirty_sync_count = 1;
    {
        std::lock_guard lock(m_mutex);
        m_ram = ram;
    }
    m_job = job;
    auto bytes = std::make_shared<std::vector<uint8_t>>(std::move(*stream));
    job->thread = std::thread([this, job, fd, bytes, stopped_at] {
        // A reader that went away must not kill the process with SIGPIPE: EPIPE instead (the
        // signal is blocked on this thread only, and a pending one goes with the thread).
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
        std::string error;
        size_t off = 0;
        auto const total = bytes->size();
        while (off < total && error.empty() && !job->cancel) {
            pollfd p { fd, POLLOUT, 0 };
            int r = ::poll(&p, 1, 100);
            if (r < 0 && errno != EINTR) {
                error = fmt::format("poll: {}", std::strerror(errno));
                break;
            }
            if (r <= 0)
                continue;
            ssize_t n = ::write(fd, bytes->data() + off, std::min<size_t>(total - off, 1 << 20));
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                error = fmt::format("write: {}", std::strerror(errno));
                break;
            }
            off += size_t(n);
            std::lock_guard lock(m_mutex);
            m_ram.transferred = off;
            m_ram.downtime_bytes = off;
            // The pages go out in the stream's order; what is left is proportional.
            m_ram.remaining = total ? uint64_t((unsigned __int128)m_ram.normal_bytes * (total - off) / total) : 0;
        }
        if (::close(fd) != 0 && error.empty() && !job->cancel)
            error = fmt::format("close: {}", std::strerror(errno));
        if (job->child > 0) {
            // The command gets its EOF; wait for it, killing it on cancel.
            int status = 0;
            for (;;) {
                pid_t w = ::waitpid(job->child, &status, WNOHANG);
                if (w == job->child || (w < 0 && errno != EINTR))
                    break;
                if (job->cancel)
                    job->kill_child();
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            {
                std::lock_guard lock(job->mutex);
                job->child = -1;
            }
            if (error.empty() && !job->cancel)
                error = child_verdict(status);
        }
        {
            std::lock_guard lock(m_mutex);
            int64_t ms = std::max<int64_t>(ms_since(m_start), 1);
            m_total_ms = ms_since(m_start);
            m_downtime_ms = ms_since(stopped_at);
            m_ram.mbps = double(m_ram.transferred) * 8.0 / 1e6 / (double(ms) / 1000.0);
            m_ram.pages_per_second = uint64_t(double(m_ram.normal) / (double(ms) / 1000.0));
        }
        MigrationStatus end = job->cancel ? MigrationStatus::Cancelled
            : error.empty()                 ? MigrationStatus::Completed
                                            : MigrationStatus::Failed;
        finish_outgoing(end, error.empty() ? error : "Unable to write to the migration stream: " + error);
    });
    return {};
}

void Migration::finish_outgoing(MigrationStatus end, std::string error)
{
    // The end of the job changes the run state, so it happens on the machine's thread
    // (QEMU: migration_iteration_finish() under the iothread lock).
    bool posted = m_machine.post([this, end, error = std::move(error)](Machine& m) {
        MigrationStatus s = end;
        {
            std::lock_guard lock(m_mutex);
            // A cancel that came after the last byte wins, except over a live migration whose
            // target has confirmed: it runs the guest now, so the source must not.
            if (m_status == MigrationStatus::Cancelling && !(m_live && s == MigrationStatus::Completed))
                s = MigrationStatus::Cancelled;
            if (s == MigrationStatus::Completed)
                m_ram.remaining = 0;
            if (s == MigrationStatus::Failed)
                m_error = error;
        }
        if (m.memory().dirty_logging())
            m.memory().stop_dirty_log();
        set_status(s);
        // QEMU 7.2 migration_iteration_finish(): a failed or cancelled migration restarts a guest
        // that ran before the stop; one that never stopped it (live pre-copy) leaves it alone.
        if (s == MigrationStatus::Completed) {
            m_run_state = MigrationRunState::PostMigrate;
        } else if (m_run_state == MigrationRunState::FinishMigrate) {
            if (m_vm_was_running) {
                m_run_state = MigrationRunState::None;
                m.resume();
            } else {
                m_run_state = MigrationRunState::PostMigrate;
            }
        }
    });
    if (!posted) {
        // The machine has stopped for good: only the status is left to record.
        {
            std::lock_guard lock(m_mutex);
            if (end == MigrationStatus::Failed)
                m_error = error;
        }
        set_status(end);
    }
}

void Migration::cancel()
{
    {
        std::lock_guard lock(m_mutex);
        if (m_status != MigrationStatus::Setup && m_status != MigrationStatus::Active)
            return; // QEMU migration_cancel(): nothing to cancel
    }
    set_status(MigrationStatus::Cancelling);
    if (m_job) {
        m_job->cancel = true;
        m_job->kill_child(); // and shuts a live migration's connection down
    }
}

void Migration::expect_incoming(bool deferred, bool autostart)
{
    m_incoming_expected = true;
    m_incoming_deferred = deferred;
    m_autostart = autostart;
    m_run_state = MigrationRunState::InMigrate;
}

Result<void, std::string> Migration::start_incoming(std::string_view uri_text, bool from_qmp)
{
    // QEMU 7.2 qmp_migrate_incoming(), in its order; an -incoming URI on the command line starts
    // the migration at once (so migrate-incoming then finds it started).
    if (from_qmp) {
        if (m_incoming_started)
            return Unexpected(std::string("The incoming migration has already been started"));
        if (m_run_state != MigrationRunState::InMigrate)
            return Unexpected(std::string("'-incoming' was not specified on the command line"));
    }
    // qemu_start_incoming_migration() sends this one whatever the capabilities; the incoming
    // status itself stays "none" until the load begins (process_incoming_migration_co).
    {
        std::lock_guard lock(m_mutex);
        m_outgoing = false;
    }
    if (m_emit)
        m_emit(MigrationStatus::Setup);
    auto uri = parse_incoming_uri(uri_text);
    if (!uri)
        return Unexpected(uri.error());
    if (uri->kind == MigrationUri::Kind::File && ::access(uri->target.c_str(), R_OK) != 0)
        return Unexpected(fmt::format("Unable to open {}: {}", uri->target, std::strerror(errno)));
    std::string origin = fmt::format("{} {}", from_qmp ? "migrate-incoming" : "-incoming", uri_text);
    if (uri->kind == MigrationUri::Kind::Tcp) {
        // Bound and listening before this returns, so that a client (a test, the source) can
        // connect as soon as QMP answers; one connection is accepted (QEMU
        // socket_start_incoming_migration, which then stops listening).
        auto job = std::make_shared<Job>();
        namespace asio = boost::asio;
        using tcp = asio::ip::tcp;
        boost::system::error_code ec;
        tcp::resolver resolver(job->io);
        auto eps = resolver.resolve(uri->target.empty() ? std::string("0.0.0.0") : uri->target, std::to_string(uri->port),
            tcp::resolver::passive, ec);
        if (ec || eps.empty())
            return Unexpected(fmt::format("address resolution failed for {}:{}: {}", uri->target, uri->port, ec.message()));
        auto ep = eps.begin()->endpoint();
        job->acceptor.emplace(job->io);
        job->acceptor->open(ep.protocol(), ec);
        if (!ec)
            job->acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
        if (!ec)
            job->acceptor->bind(ep, ec);
        // The connection's receive buffer is set before it exists (the window scale is agreed
        // in the handshake): see kSocketBuffer.
        if (!ec)
            job->acceptor->set_option(asio::socket_base::receive_buffer_size(kSocketBuffer), ec);
        if (!ec)
            job->acceptor->listen(1, ec);
        if (ec)
            return Unexpected(fmt::format("Failed to bind socket {}:{}: {}", uri->target, uri->port, ec.message()));
        auto local = job->acceptor->local_endpoint(ec);
        {
            std::lock_guard lock(m_mutex);
            m_listen_address = std::make_pair(local.address().to_string(), local.port());
        }
        job->set_socket(job->acceptor->native_handle());
        m_incoming_started = true;
        m_job = job;
        job->thread = std::thread([this, job, origin] { run_tcp_target(job, origin); });
        return {};
    }
    m_incoming_started = true;
    // A snapshot holds at most the guest's RAM and the state of its parts: twice the RAM is a
    // generous bound that still keeps a runaway command from filling the host's memory.
    uint64_t limit = 2 * m_machine.config().memory_size + (64ull << 20);
    auto job = std::make_shared<Job>();
    m_job = job;
    job->thread = std::thread([this, job, uri = *uri, origin, limit] {
        auto stream = read_incoming_stream(uri, limit, [job](int pid) {
            std::lock_guard lock(job->mutex);
            job->child = pid;
            if (job->cancel)
                ::kill(-pid, SIGKILL);
        });
        {
            std::lock_guard lock(job->mutex);
            job->child = -1; // reaped by read_incoming_stream
        }
        auto bytes = std::make_shared<Result<std::vector<uint8_t>, std::string>>(std::move(stream));
        m_machine.post([this, bytes, origin](Machine&) {
            if (!*bytes) {
                m_incoming_error = fmt::format("{}: {}", origin, bytes->error());
                set_status(MigrationStatus::Failed);
                m_machine.quit();
                return;
            }
            load(std::move(**bytes), origin);
        });
    });
    return {};
}

void Migration::load(std::vector<uint8_t> stream, std::string origin)
{
    // process_incoming_migration_co(): none/setup → active, then the load.
    set_status(MigrationStatus::Active);
    if (auto r = m_machine.load_snapshot(stream); !r) {
        // QEMU reports "load of migration failed" and exits 1; sevemu names the bad section.
        m_incoming_error = fmt::format("{}: {}", origin, r.error().message);
        set_status(MigrationStatus::Failed);
        m_machine.quit();
        return;
    }
    set_status(MigrationStatus::Completed);
    m_loaded = true;
    m_run_state = MigrationRunState::None;
    // process_incoming_migration_bh(): autostart unless -S (or a stop while in "inmigrate").
    if (m_autostart)
        m_machine.resume();
}

std::optional<std::string> Migration::incoming_error() const { return m_incoming_error; }

int64_t Migration::downtime_limit_ms() const
{
    std::lock_guard lock(m_mutex);
    return m_downtime_limit_ms;
}

uint64_t Migration::max_bandwidth() const
{
    std::lock_guard lock(m_mutex);
    return m_max_bandwidth;
}

Result<void, std::string> Migration::set_max_bandwidth(uint64_t bytes_per_second)
{
    // QEMU 7.2 migrate_params_check(): at most SIZE_MAX / 1000 bytes per second.
    if (bytes_per_second > UINT64_MAX / 1000)
        return Unexpected(fmt::format("Parameter 'max_bandwidth' expects an integer in the range of 0 to {} bytes/second",
            UINT64_MAX / 1000));
    std::lock_guard lock(m_mutex);
    m_max_bandwidth = bytes_per_second;
    return {};
}

Result<void, std::string> Migration::set_downtime_limit_ms(int64_t ms)
{
    // QEMU 7.2 migrate_params_check(): MAX_MIGRATE_DOWNTIME is 2000 seconds.
    if (ms < 0 || ms > 2'000'000)
        return Unexpected(std::string("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds"));
    std::lock_guard lock(m_mutex);
    m_downtime_limit_ms = ms;
    return {};
}

MigrationRunState Migration::run_state() const { return m_run_state; }

bool Migration::loaded() const { return m_loaded; }

Result<void, std::string> Migration::cont()
{
    switch (m_run_state) {
    case MigrationRunState::InMigrate:
        m_autostart = true;
        return {};
    case MigrationRunState::FinishMigrate:
        return Unexpected(std::string("Migration is not finalized yet"));
    case MigrationRunState::PostMigrate:
    case MigrationRunState::None:
        // SEND_FINISH made the SEV guest's context SENT: the firmware would refuse to ACTIVATE
        // it again, and the guest runs on the target now.
        if (m_machine.sev() && m_machine.sev()->state() == SevState::Sent)
            return Unexpected(std::string("SEV: the guest was migrated to another machine (SEND_FINISH): it cannot run "
                                          "here again"));
        m_run_state = MigrationRunState::None;
        m_machine.resume();
        return {};
    }
    return {};
}

void Migration::stop()
{
    if (m_run_state == MigrationRunState::InMigrate) {
        m_autostart = false;
        return;
    }
    if (m_run_state == MigrationRunState::PostMigrate)
        return; // already stopped; QEMU's vm_stop() leaves the state as it is when not running
    m_machine.pause();
}

// ---------------------------------------------------------------- live migration over TCP

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr unsigned kChunkPages = 256;                  // pages per "ram-pages" section (1 MiB)
constexpr unsigned kChunksPerRequest = 8;              // sections made per request to the machine
constexpr size_t kApplyDepth = 2;                      // RAM sections the target has in flight
constexpr uint64_t kMaxSectionPayload = 64ull << 20;   // the target's bound on one section
constexpr size_t kMaxReply = 4096;                     // the target's answer line
constexpr int64_t kReplyTimeoutMs = 60'000;

// Plain guests: a page as DRAM holds it (zero pages as a kind only, as QEMU sends them as a
// flag, migration/ram.c save_zero_page).
class PlainRamEncoder final : public RamPageEncoder {
public:
    Result<void, std::string> begin(Machine&, SnapshotWriter&) override { return {}; }
    Result<uint8_t, std::string> encode_page(Machine& m, uint64_t spa, StateWriter& w) override
    {
        if (!m.memory().copy_dram_page(spa >> kPageShift, m_page))
            return Unexpected(fmt::format("page {:#x} is not DRAM", spa));
        uint64_t acc = 0;
        for (size_t i = 0; i < kPageSize; i += 8) {
            uint64_t v;
            std::memcpy(&v, m_page.data() + i, 8);
            acc |= v;
        }
        if (acc == 0) {
            w.u8(0);
            return uint8_t(0);
        }
        w.u8(1);
        w.raw(m_page);
        return uint8_t(1);
    }
    Result<void, std::string> finish(Machine&, SnapshotWriter&) override { return {}; }
    void abort(Machine&) override { }

private:
    std::array<uint8_t, kPageSize> m_page {};
};

// Runs `f` on the machine's thread and hands its result back (nullopt: the machine has stopped
// for good). The job's thread waits; the machine serves the request between time slices.
// `background`: served at the end of the running vCPU's time slice rather than by cutting it
// short, so that a pass's stream of requests leaves the guest its time (QEMU's vCPUs run on their
// own threads beside the migration thread; sevemu's share the machine's thread with it).
template <class R>
std::optional<std::future<R>> post_async(Machine& m, std::function<R(Machine&)> f, bool background = false)
{
    auto p = std::make_shared<std::promise<R>>();
    auto fut = p->get_future();
    if (!m.post([p, f = std::move(f)](Machine& mm) { p->set_value(f(mm)); }, !background))
        return std::nullopt;
    return fut;
}
template <class R>
std::optional<R> on_machine(Machine& m, std::function<R(Machine&)> f)
{
    auto fut = post_async<R>(m, std::move(f));
    if (!fut)
        return std::nullopt;
    return fut->get();
}

uint64_t popcount(std::vector<uint64_t> const& bits)
{
    uint64_t n = 0;
    for (uint64_t w : bits)
        n += uint64_t(__builtin_popcountll(w));
    return n;
}

std::string error_text(boost::system::error_code const& ec)
{
    if (ec == asio::error::eof)
        return "connection closed by the peer";
    return ec.message();
}

// Blocks until `fd` can be read or `timeout_ms` passes (false), checking `cancel` every 100 ms.
bool wait_readable(int fd, int64_t timeout_ms, std::atomic<bool> const& cancel)
{
    auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!cancel && Clock::now() < until) {
        pollfd p { fd, POLLIN, 0 };
        int r = ::poll(&p, 1, 100);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return true; // the read that follows reports it
    }
    return false;
}

} // namespace

std::unique_ptr<RamPageEncoder> make_ram_page_encoder(Machine& m)
{
    if (m.sev())
        return make_sev_ram_page_encoder(); // SEND_* through the KVM layer
    return std::make_unique<PlainRamEncoder>();
}

std::unique_ptr<RamPageDecoder> make_ram_page_decoder(Machine& m)
{
    if (m.sev())
        return make_sev_ram_page_decoder(); // RECEIVE_*
    return nullptr;
}

// The source's pre-copy state. The bitmaps, cursor and encoder are touched on the machine's
// thread only (inside posted requests); the job's thread reads the counts they return.
struct Migration::LiveSource {
    std::unique_ptr<RamPageEncoder> encoder;
    std::vector<uint64_t> to_send; // frames still to go in this pass
    uint64_t cursor {};
    uint64_t frames {};
    uint32_t pass { 1 };
    uint64_t left {}; // set bits in to_send at or after the cursor
    Clock::time_point last_sync;
    // Chunk buffers that went out, kept for the next chunks (the job's thread gives them back
    // after sending, the machine's thread takes them): a fresh 1 MiB buffer per chunk would be
    // a new mapping, faulted in page by page and unmapped again after each send.
    std::mutex spare_mutex;
    std::vector<std::vector<uint8_t>> spare;
    std::vector<uint8_t> take_buffer()
    {
        std::lock_guard lock(spare_mutex);
        if (spare.empty())
            return {};
        auto b = std::move(spare.back());
        spare.pop_back();
        return b;
    }
    void give_back(std::vector<uint8_t>&& b)
    {
        std::lock_guard lock(spare_mutex);
        if (spare.size() < 2 * kChunksPerRequest + 2 && b.capacity()) { // two batches in flight, and the stop's
            b.clear();
            spare.push_back(std::move(b));
        }
    }
};

namespace {

struct Chunk {
    std::vector<uint8_t> payload; // a "ram-pages" payload; empty when the pass is over
    uint64_t zero {}, normal {}, left {};
    std::string error;
};

} // namespace

void Migration::run_tcp_source(std::shared_ptr<Job> job, MigrationUri uri)
{
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

    auto live = std::make_shared<LiveSource>();
    bool const progress = ::isatty(STDERR_FILENO) == 1;
    Clock::time_point last_progress {};
    bool stopped = false; // the vCPUs are stopped (stop-and-copy)
    Clock::time_point stopped_at {};

    // The end: on the machine's thread, the encoder's abort unless completed, then the status.
    auto end = [&](MigrationStatus status, std::string error) {
        if (progress)
            std::fputc('\n', stderr);
        on_machine<bool>(m_machine, [live, status](Machine& m) {
            if (live->encoder) {
                if (status == MigrationStatus::Completed)
                    live->encoder->complete(m);
                else
                    live->encoder->abort(m);
            }
            return true;
        });
        {
            std::lock_guard lock(m_mutex);
            m_total_ms = ms_since(m_start);
            if (stopped)
                m_downtime_ms = ms_since(stopped_at);
            double secs = std::max(double(m_total_ms), 1.0) / 1000.0;
            m_ram.mbps = double(m_ram.transferred) * 8.0 / 1e6 / secs;
            m_ram.pages_per_second = uint64_t(double(m_ram.normal + m_ram.duplicate) / secs);
        }
        finish_outgoing(status, std::move(error));
    };
    auto cancelled = [&] { return job->cancel.load(); };

    // --- Setup: connect (QEMU migration/socket.c socket_start_outgoing_migration).
    asio::io_context io;
    tcp::socket sock(io);
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto eps = resolver.resolve(uri.target, std::to_string(uri.port), ec);
    if (ec)
        return end(MigrationStatus::Failed, fmt::format("address resolution failed for {}:{}: {}", uri.target, uri.port, ec.message()));
    for (auto const& e : eps) {
        sock.open(e.endpoint().protocol(), ec);
        if (ec)
            continue;
        job->set_socket(sock.native_handle());
        sock.connect(e.endpoint(), ec);
        if (!ec)
            break;
        job->set_socket(-1);
        sock.close();
    }
    if (cancelled())
        return end(MigrationStatus::Cancelled, {});
    if (ec || !sock.is_open())
        return end(MigrationStatus::Failed, fmt::format("Failed to connect to '{}:{}': {}", uri.target, uri.port, ec.message()));
    sock.set_option(tcp::no_delay(true), ec);
    sock.set_option(asio::socket_base::send_buffer_size(kSocketBuffer), ec);
    auto const connected_at = Clock::now();

    // Writes buffers in order, one gathered write (a RAM section goes out from the chunk's own
    // buffer between the record's head and CRC: SnapshotWriter::add_gathered).
    auto send_buffers = [&](std::span<asio::const_buffer const> buffers) -> std::string {
        size_t size = asio::buffer_size(buffers);
        if (size == 0)
            return {};
        asio::write(sock, buffers, ec);
        if (ec)
            return cancelled() ? std::string() : "Unable to write to the migration stream: " + error_text(ec);
        uint64_t limit, sent;
        {
            std::lock_guard lock(m_mutex);
            m_ram.transferred += size;
            (stopped ? m_ram.downtime_bytes : m_ram.precopy_bytes) += size;
            limit = m_max_bandwidth;
            sent = m_ram.precopy_bytes;
        }
        // max-bandwidth (QEMU's rate limit, bytes per second) holds the pre-copy back; the
        // stop-and-copy goes at full speed, as QEMU lifts the limit for it.
        if (limit && !stopped) {
            auto due = connected_at + std::chrono::microseconds(uint64_t(double(sent) / double(limit) * 1e6));
            while (!cancelled() && Clock::now() < due)
                std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(50)));
        }
        return {};
    };
    auto send = [&](std::vector<uint8_t> const& bytes) -> std::string {
        asio::const_buffer b = asio::buffer(bytes);
        return send_buffers(std::span(&b, 1));
    };
    auto fail_or_cancel = [&](std::string error) {
        job->set_socket(-1);
        sock.close(ec);
        if (cancelled())
            return end(MigrationStatus::Cancelled, {});
        return end(MigrationStatus::Failed, std::move(error));
    };

    // The stream's opening, the first sync (the dirty log starts) and pass 1's set: every frame
    // of DRAM.
    SnapshotWriter writer(kSnapshotStreamVersion);
    auto opened = on_machine<std::string>(m_machine, [this, live, &writer](Machine& m) -> std::string {
        if (auto b = m.migration_blocker(true))
            return *b;
        live->encoder = make_ram_page_encoder(m);
        if (auto r = m.save_live_prologue(writer); !r)
            return r.error().message;
        if (auto r = live->encoder->begin(m, writer); !r)
            return r.error();
        auto& mc = m.memory();
        live->frames = mc.frame_limit();
        live->to_send.assign((live->frames + 63) / 64, 0);
        uint64_t total = 0;
        for (auto const& r : mc.ranges())
            for (uint64_t pfn = r.base.pfn(); pfn < r.base.pfn() + r.size / kPageSize; ++pfn)
                if (live->encoder->wants(m, pfn << kPageShift)) {
                    live->to_send[pfn / 64] |= 1ull << (pfn % 64);
                    ++total;
                }
        live->left = total;
        mc.start_dirty_log();
        live->last_sync = Clock::now();
        std::lock_guard lock(m_mutex);
        m_ram.total = total * kPageSize;
        m_ram.remaining = m_ram.total;
        m_ram.dirty_sync_count = 1;
        return {};
    });
    if (!opened)
        return fail_or_cancel("the machine has stopped");
    if (!opened->empty())
        return fail_or_cancel(*opened);
    if (auto e = send(writer.take()); !e.empty() || cancelled())
        return fail_or_cancel(e);
    {
        std::lock_guard lock(m_mutex);
        m_setup_ms = ms_since(m_start);
    }
    set_status(MigrationStatus::Active);

    // One chunk of the current pass, made on the machine's thread between time slices.
    std::function<Chunk(Machine&)> make_chunk = [live](Machine& m) {
        Chunk c;
        StateWriter w;
        w.data() = live->take_buffer();
        // Room for the largest record (an SEV packet: kind, length, header length, the header
        // and the page), so the chunk never moves while it is written.
        w.data().reserve(8 + size_t(kChunkPages) * (8 + 1 + 4 + 4 + 0x100 + kPageSize));
        w.u32(live->pass);
        w.u32(0); // the count, patched below
        uint32_t count = 0;
        while (live->cursor < live->frames && count < kChunkPages) {
            uint64_t word = live->to_send[live->cursor / 64] >> (live->cursor % 64);
            if (word == 0) {
                live->cursor = (live->cursor / 64 + 1) * 64;
                continue;
            }
            live->cursor += uint64_t(__builtin_ctzll(word));
            uint64_t pfn = live->cursor++;
            live->to_send[pfn / 64] &= ~(1ull << (pfn % 64));
            --live->left;
            if (!live->encoder->wants(m, pfn << kPageShift))
                continue; // a dirty page the encoder keeps back (the SEV hypervisor's own)
            w.u64(pfn << kPageShift);
            auto kind = live->encoder->encode_page(m, pfn << kPageShift, w);
            if (!kind) {
                c.error = kind.error();
                return c;
            }
            ++(*kind == 0 ? c.zero : c.normal);
            ++count;
        }
        c.left = live->left;
        if (count) {
            for (int k = 0; k < 4; ++k)
                w.data()[4 + k] = uint8_t(count >> (8 * k));
            c.payload = w.take();
        } else {
            live->give_back(w.take());
        }
        return c;
    };
    // A few chunks per request: each request is two thread hand-offs, which a loaded host can
    // delay by a scheduling quantum.
    std::function<std::vector<Chunk>(Machine&)> make_batch = [make_chunk](Machine& m) {
        std::vector<Chunk> out;
        for (unsigned i = 0; i < kChunksPerRequest; ++i) {
            out.push_back(make_chunk(m));
            if (!out.back().error.empty() || out.back().payload.empty())
                break;
        }
        return out;
    };
    // Sends the current pass's pages; the next batch is made while this one goes out.
    auto send_pass = [&]() -> std::string {
        auto next = post_async<std::vector<Chunk>>(m_machine, make_batch, true);
        bool pass_over = false;
        while (next && !pass_over) {
            auto batch = next->get();
            next.reset();
            for (auto const& c : batch)
                if (!c.error.empty())
                    return c.error;
            pass_over = batch.empty() || batch.back().payload.empty();
            if (!pass_over && !cancelled())
                next = post_async<std::vector<Chunk>>(m_machine, make_batch, true);
            std::string e;
            for (auto& c : batch) {
                if (c.payload.empty())
                    break;
                auto record = writer.add_gathered(kRamPagesSection, 1, c.payload);
                std::array<asio::const_buffer, 3> parts { asio::buffer(record.head), asio::buffer(c.payload), asio::buffer(record.tail) };
                e = send_buffers(parts);
                live->give_back(std::move(c.payload));
                std::lock_guard lock(m_mutex);
                m_ram.duplicate += c.zero;
                m_ram.normal += c.normal;
                m_ram.normal_bytes = m_ram.normal * kPageSize;
                m_ram.remaining = c.left * kPageSize;
                double secs = std::max(double(ms_since(m_start)), 1.0) / 1000.0;
                m_ram.mbps = double(m_ram.transferred) * 8.0 / 1e6 / secs;
                m_ram.pages_per_second = uint64_t(double(m_ram.normal + m_ram.duplicate) / secs);
                if (!e.empty() || cancelled())
                    break;
            }
            if (!e.empty() || cancelled()) {
                if (next)
                    next->wait(); // the request must not outlive what it refers to
                return e;
            }
            if (progress && Clock::now() - last_progress > std::chrono::milliseconds(200)) {
                last_progress = Clock::now();
                std::lock_guard lock(m_mutex);
                std::fprintf(stderr, "\rsevemu: migration pass %u: %llu pages sent, dirty rate %llu pages/s, expected downtime %lld ms   ",
                    live->pass, (unsigned long long)(m_ram.normal + m_ram.duplicate), (unsigned long long)m_ram.dirty_pages_rate,
                    (long long)m_expected_downtime_ms);
                std::fflush(stderr);
            }
        }
        if (!pass_over && !cancelled())
            return "the machine has stopped";
        return {};
    };

    // --- Pre-copy: pass after pass while the guest runs.
    for (;;) {
        auto pass_start = Clock::now();
        uint64_t bytes_before;
        {
            std::lock_guard lock(m_mutex);
            bytes_before = m_ram.transferred;
        }
        if (auto e = send_pass(); !e.empty() || cancelled())
            return fail_or_cancel(e);
        // The sync: what the guest wrote meanwhile is the next pass (migration_bitmap_sync).
        auto dirty = on_machine<std::pair<uint64_t, double>>(m_machine, [live](Machine& m) {
            live->to_send = m.memory().sync_dirty_log();
            live->cursor = 0;
            live->left = popcount(live->to_send);
            double secs = std::chrono::duration<double>(Clock::now() - live->last_sync).count();
            live->last_sync = Clock::now();
            ++live->pass;
            return std::make_pair(live->left, secs);
        });
        if (!dirty)
            return fail_or_cancel("the machine has stopped");
        double pass_secs = std::max(std::chrono::duration<double>(Clock::now() - pass_start).count(), 1e-3);
        uint64_t pass_bytes;
        int64_t expected;
        {
            std::lock_guard lock(m_mutex);
            pass_bytes = m_ram.transferred - bytes_before;
            ++m_ram.dirty_sync_count;
            m_ram.dirty_pages_rate = uint64_t(double(dirty->first) / std::max(dirty->second, 1e-3));
            m_ram.remaining = dirty->first * kPageSize;
            // QEMU migration_update_counters(): expected downtime = what is dirty / bandwidth.
            double bandwidth = double(pass_bytes) / pass_secs; // bytes per second
            expected = int64_t(double(dirty->first * (kPageSize + 9)) / std::max(bandwidth, 1.0) * 1000.0);
            m_expected_downtime_ms = expected;
        }
        if (expected <= downtime_limit_ms() || live->pass > kMaxPasses)
            break;
    }

    // --- Stop and copy: the vCPUs stop between slices; the last dirty pages, the encoder's end,
    // the vCPU, clock and device state and the end record go in one piece.
    stopped_at = Clock::now();
    auto final_bytes = on_machine<std::pair<std::vector<uint8_t>, std::string>>(m_machine,
        [this, live, &writer, &stopped, make_chunk](Machine& m) -> std::pair<std::vector<uint8_t>, std::string> {
            m_vm_was_running = !m.paused();
            m.pause();
            m_run_state = MigrationRunState::FinishMigrate;
            stopped = true;
            // The last sync: the pages of the interrupted pass and the ones written since.
            auto more = m.memory().sync_dirty_log();
            for (size_t i = 0; i < more.size(); ++i)
                live->to_send[i] |= more[i];
            live->cursor = 0;
            live->left = popcount(live->to_send);
            {
                std::lock_guard lock(m_mutex);
                ++m_ram.dirty_sync_count;
            }
            uint64_t zero = 0, normal = 0;
            for (;;) {
                Chunk c = make_chunk(m);
                if (!c.error.empty())
                    return { {}, c.error };
                if (c.payload.empty())
                    break;
                zero += c.zero;
                normal += c.normal;
                writer.add(kRamPagesSection, 1, c.payload);
                live->give_back(std::move(c.payload));
            }
            if (auto r = live->encoder->finish(m, writer); !r)
                return { {}, r.error() };
            if (auto r = m.save_live_epilogue(writer); !r)
                return { {}, r.error().message };
            auto bytes = writer.take();
            auto tail = writer.finish();
            bytes.insert(bytes.end(), tail.begin(), tail.end());
            std::lock_guard lock(m_mutex);
            m_ram.duplicate += zero;
            m_ram.normal += normal;
            m_ram.normal_bytes = m_ram.normal * kPageSize;
            return { std::move(bytes), {} };
        });
    if (!final_bytes)
        return fail_or_cancel("the machine has stopped");
    if (!final_bytes->second.empty())
        return fail_or_cancel(final_bytes->second);
    if (auto e = send(final_bytes->first); !e.empty() || cancelled())
        return fail_or_cancel(e);

    // --- The target's answer: "OK" once it has loaded everything, or why it refused.
    std::string reply;
    while (reply.size() < kMaxReply && (reply.empty() || reply.back() != '\n')) {
        if (!wait_readable(sock.native_handle(), kReplyTimeoutMs, job->cancel))
            return fail_or_cancel(cancelled() ? std::string() : "the destination did not confirm the migration in time");
        char buf[256];
        size_t n = sock.read_some(asio::buffer(buf), ec);
        if (ec)
            return fail_or_cancel(fmt::format("the destination closed the connection before confirming the migration ({})",
                error_text(ec)));
        reply.append(buf, n);
    }
    job->set_socket(-1);
    sock.close(ec);
    if (reply == "OK\n")
        return end(MigrationStatus::Completed, {});
    if (reply.size() > 4 && reply.substr(0, 4) == "ERR ")
        return end(MigrationStatus::Failed, "the destination refused the migration: " + reply.substr(4, reply.size() - 5));
    return end(MigrationStatus::Failed, "the destination answered something other than OK");
}

void Migration::fail_incoming(std::string message)
{
    m_machine.post([this, message](Machine&) {
        m_incoming_error = message;
        set_status(MigrationStatus::Failed);
        m_machine.quit();
    });
}

void Migration::run_tcp_target(std::shared_ptr<Job> job, std::string origin)
{
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

    boost::system::error_code ec;
    tcp::socket sock(job->io);
    job->acceptor->accept(sock, ec);
    job->set_socket(-1);
    job->acceptor->close();
    {
        std::lock_guard lock(m_mutex);
        m_listen_address.reset();
    }
    if (ec || job->cancel) {
        if (!job->cancel)
            fail_incoming(fmt::format("{}: accept: {}", origin, ec.message()));
        return;
    }
    job->set_socket(sock.native_handle());
    // process_incoming_migration_co(): the stream begins.
    set_status(MigrationStatus::Active);

    auto refuse = [&](std::string why) {
        // The source hears why (best effort: it may be gone), then this process ends with the
        // reason; its guest never ran.
        std::string line = "ERR " + why + "\n";
        for (auto& ch : line)
            if (ch == '\n' && &ch != &line.back())
                ch = ' ';
        asio::write(sock, asio::buffer(line), ec);
        job->set_socket(-1);
        sock.close(ec);
        fail_incoming(fmt::format("{}: {}", origin, why));
    };

    SnapshotStreamReader reader([&](std::span<uint8_t> out) -> Result<void, std::string> {
        asio::read(sock, asio::buffer(out.data(), out.size()), ec);
        if (ec)
            return Unexpected(job->cancel ? std::string("cancelled") : error_text(ec));
        return {};
    });
    if (auto h = reader.read_header(); !h)
        return refuse(h.error().text());
    else if (*h != kSnapshotStreamVersion)
        return refuse(fmt::format("a version-{} stream over tcp: (a live migration writes version {})", *h, kSnapshotStreamVersion));

    auto decoder = on_machine<std::shared_ptr<RamPageDecoder>>(m_machine,
        [](Machine& m) { return std::shared_ptr<RamPageDecoder>(make_ram_page_decoder(m)); });
    if (!decoder)
        return refuse("the machine has stopped");
    std::vector<OwnedSection> kept;
    bool have_machine = false;
    std::deque<std::future<std::string>> applying; // RAM sections posted to the machine, oldest first
    // Waits until at most `keep` are in flight; the first error of those finished.
    auto wait_applied = [&](size_t keep = 0) -> std::string {
        std::string first;
        while (applying.size() > keep) {
            auto e = applying.front().get();
            applying.pop_front();
            if (first.empty())
                first = e;
        }
        return first;
    };
    for (;;) {
        auto next = reader.next(kMaxSectionPayload);
        if (!next) {
            wait_applied();
            return refuse(next.error().text());
        }
        if (!*next)
            break;
        auto sec = std::make_shared<OwnedSection>(std::move(**next));
        if (sec->name == "machine") {
            auto r = on_machine<std::string>(m_machine, [sec](Machine& m) -> std::string {
                auto ok = m.check_snapshot_machine(SnapshotSection { sec->name, sec->version, sec->payload });
                return ok ? std::string() : ok.error().message;
            });
            if (!r || !r->empty())
                return refuse(r ? *r : "the machine has stopped");
            have_machine = true;
            kept.push_back(std::move(*sec));
            continue;
        }
        if (!have_machine)
            return refuse(StateError { "machine", "missing from the start of the stream" }.text());
        if (sec->name == kRamPagesSection) {
            if (sec->version != 1)
                return refuse(StateError { sec->name, fmt::format("unsupported version {} (this build reads version 1)", sec->version) }.text());
            if (auto e = wait_applied(kApplyDepth - 1); !e.empty()) {
                wait_applied();
                return refuse(e);
            }
            auto dec = *decoder;
            auto posted = post_async<std::string>(m_machine, [sec, dec](Machine& m) -> std::string {
                Machine::PageDecoder decode;
                if (dec)
                    decode = [&m, dec](uint64_t spa, uint8_t kind, std::span<uint8_t const> data) {
                        return dec->decode_page(m, spa, kind, data);
                    };
                auto r = m.load_ram_pages(sec->payload, decode);
                return r ? std::string() : r.error().message;
            });
            if (!posted) {
                wait_applied();
                return refuse("the machine has stopped");
            }
            applying.push_back(std::move(*posted));
            continue;
        }
        if (*decoder && (*decoder)->claims(sec->name)) {
            if (auto e = wait_applied(); !e.empty())
                return refuse(e);
            auto dec = *decoder;
            auto r = on_machine<std::string>(m_machine, [sec, dec](Machine& m) -> std::string {
                auto ok = dec->session_section(m, sec->name, sec->version, sec->payload);
                return ok ? std::string() : StateError { sec->name, ok.error() }.text();
            });
            if (!r || !r->empty())
                return refuse(r ? *r : "the machine has stopped");
            continue;
        }
        kept.push_back(std::move(*sec));
    }
    if (auto e = wait_applied(); !e.empty())
        return refuse(e);

    // The end record and the stream CRC are verified: the rest loads, and the guest may start.
    uint64_t total = reader.bytes_read();
    auto dec = *decoder;
    auto loaded = on_machine<std::string>(m_machine, [&kept, total, dec](Machine& m) -> std::string {
        std::vector<SnapshotSection> views;
        for (auto const& k : kept)
            views.push_back(SnapshotSection { k.name, k.version, k.payload });
        if (auto r = m.load_live_state(views, total); !r)
            return r.error().message;
        if (dec)
            if (auto r = dec->finish(m); !r)
                return r.error();
        return {};
    });
    if (!loaded || !loaded->empty())
        return refuse(loaded ? *loaded : "the machine has stopped");
    static constexpr char kOk[] = "OK\n";
    asio::write(sock, asio::buffer(kOk, 3), ec);
    job->set_socket(-1);
    sock.close();
    if (ec) {
        // The source cannot know that this side has the guest: it keeps its own running.
        fail_incoming(fmt::format("{}: the source went away before the migration was confirmed ({})", origin, error_text(ec)));
        return;
    }
    m_machine.post([this](Machine&) {
        set_status(MigrationStatus::Completed);
        m_loaded = true;
        m_run_state = MigrationRunState::None;
        if (m_autostart)
            m_machine.resume();
    });
}

} // namespace sevemu::emulator
