#include "emulator/migration.h"

#include "emulator/machine.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace sevemu::emulator {

namespace {

using Clock = std::chrono::steady_clock;

int64_t ms_since(Clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// QEMU's network and fd transports: valid URIs to QEMU that sevemu does not offer (yet).
std::optional<std::string> unsupported_transport(std::string_view uri)
{
    for (std::string_view p : { "tcp:", "unix:", "vsock:", "fd:", "rdma:" })
        if (starts_with(uri, p))
            return fmt::format("migration over {} is unsupported: sevemu writes snapshots to file:PATH or exec:CMD (QUIRKS.md)",
                p.substr(0, p.size() - 1));
    return std::nullopt;
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
    if (auto why = unsupported_transport(uri))
        return Unexpected(*why);
    // QEMU 7.2 qmp_migrate(): QERR_INVALID_PARAMETER_VALUE, "uri", "a valid migration protocol".
    return Unexpected(std::string("Parameter 'uri' expects a valid migration protocol"));
}

Result<MigrationUri, std::string> parse_incoming_uri(std::string_view uri)
{
    if (auto u = offline_uri(uri))
        return *u;
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
    std::mutex mutex; // guards child
    pid_t child { -1 };
    void kill_child()
    {
        std::lock_guard lock(mutex);
        if (child > 0)
            ::kill(-child, SIGKILL); // the command's process group (spawn_shell)
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
        if (auto b = m_machine.migration_blocker())
            info.blocked_reasons.push_back(*b);
    info.status = m_status;
    if (!m_outgoing) {
        // fill_destination_migration_info(): the status only.
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
        info.expected_downtime_ms = 300; // QEMU's default downtime-limit, its initial estimate
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
    if (auto b = m_machine.migration_blocker())
        return Unexpected(*b);

    if (m_job && m_job->thread.joinable())
        m_job->thread.join(); // the previous job has ended (its status is final)
    {
        std::lock_guard lock(m_mutex);
        m_outgoing = true;
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
            if (m_status == MigrationStatus::Cancelling)
                s = MigrationStatus::Cancelled; // a cancel that came after the last byte wins
            if (s == MigrationStatus::Completed)
                m_ram.remaining = 0;
            if (s == MigrationStatus::Failed)
                m_error = error;
        }
        set_status(s);
        if (s != MigrationStatus::Completed && m_vm_was_running) {
            m_run_state = MigrationRunState::None;
            m.resume();
        } else {
            m_run_state = MigrationRunState::PostMigrate;
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
        m_job->kill_child();
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
    m_incoming_started = true;
    std::string origin = fmt::format("{} {}", from_qmp ? "migrate-incoming" : "-incoming", uri_text);
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

} // namespace sevemu::emulator
