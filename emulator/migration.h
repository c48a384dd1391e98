// sevemu — snapshots with QEMU's migration interface: the transports (`file:PATH`, `exec:CMD`),
// the outgoing job (QMP `migrate`, `migrate_cancel`, `query-migrate`), the incoming side
// (`-incoming file:|exec:|defer`, QMP `migrate-incoming`), the migration capabilities and the
// run states QEMU shows around a migration ("inmigrate", "finish-migrate", "postmigrate").
//
// A migration of a plain guest is an offline snapshot: the machine stops, Machine::save_snapshot()
// writes the whole stream (base/state_stream.h) into memory, and a writer thread of this job
// copies it to the file or to the command's stdin, so that neither the machine nor QMP waits on a
// slow consumer. Everything that touches the machine runs on its thread (Machine::post); the
// writer and reader threads touch only the job's own state, under its mutex.
//
// Status changes follow QEMU 7.2 (migration/migration.c): outgoing none → setup → active →
// completed | failed | cancelling → cancelled; incoming setup → active → completed | failed. A
// MIGRATION event is sent for each only when the `events` capability is on (migrate_set_state →
// migrate_generate_event), except the incoming "setup", which QEMU always sends
// (qemu_start_incoming_migration). Boost.Asio and JSON stay out of this header: QMP's
// tools/sevemu/qmp_commands.cpp turns MigrationInfo into QEMU's MigrationInfo object.
#pragma once

#include "base/result.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sevemu::emulator {

class Machine;

// qapi/migration.json MigrationStatus (the subset an offline snapshot goes through).
enum class MigrationStatus : uint8_t { None, Setup, Cancelling, Cancelled, Active, Completed, Failed };
std::string_view migration_status_name(MigrationStatus);

// A migration URI of the offline forms: "file:PATH" (QEMU 8.2+) or "exec:CMD" (run as
// `/bin/sh -c CMD`, QEMU migration/exec.c).
struct MigrationUri {
    enum class Kind : uint8_t { File, Exec };
    Kind kind {};
    std::string target; // the path, or the shell command
};
// Outgoing (QMP migrate): QEMU 7.2 qmp_migrate()'s "Parameter 'uri' expects a valid migration
// protocol" for what no version of QEMU knows, and an "unsupported" line for QEMU's network forms.
Result<MigrationUri, std::string> parse_outgoing_uri(std::string_view uri);
// Incoming (-incoming, migrate-incoming): qemu_start_incoming_migration()'s "unknown migration
// protocol: URI", or the same "unsupported" line.
Result<MigrationUri, std::string> parse_incoming_uri(std::string_view uri);

// Reads a whole incoming stream: the file, or the command's stdout until EOF (its stdin is
// /dev/null, as QEMU's qio_channel_command_new_spawn gives an O_RDONLY command). At most `limit`
// bytes; a command that exits with a non-zero status is an error. Blocking: not on the machine's
// thread.
// `spawned` is told the command's process id (its process group's), so that another thread can
// end a command that never finishes (Migration::shutdown).
Result<std::vector<uint8_t>, std::string> read_incoming_stream(MigrationUri const&, uint64_t limit,
    std::function<void(int pid)> const& spawned = {});

// qapi/migration.json MigrationStats, as populate_ram_info() fills it in QEMU 7.2.
struct MigrationRamStats {
    uint64_t transferred {};   // stream bytes written so far
    uint64_t remaining {};     // guest RAM bytes not yet in the stream (0 once completed)
    uint64_t total {};         // guest RAM bytes
    uint64_t duplicate {};     // zero pages (elided from the stream)
    uint64_t normal {};        // pages written with their contents
    uint64_t normal_bytes {};  // normal * page_size
    double mbps {};            // stream throughput, megabits per second
    uint64_t dirty_sync_count {};
    uint64_t page_size { 4096 };
    uint64_t pages_per_second {};
    uint64_t precopy_bytes {};  // bytes sent while the guest ran: 0 (the guest is stopped first)
    uint64_t downtime_bytes {}; // bytes sent while the guest was stopped: the whole stream
};

// What query-migrate reports (QEMU 7.2 fill_source_migration_info / fill_destination_migration_info).
struct MigrationInfo {
    MigrationStatus status { MigrationStatus::None };
    std::optional<int64_t> total_time_ms;
    std::optional<int64_t> setup_time_ms;
    std::optional<int64_t> downtime_ms;
    std::optional<int64_t> expected_downtime_ms;
    std::optional<MigrationRamStats> ram;
    std::optional<std::string> error_desc;
    std::vector<std::string> blocked_reasons; // reported when non-empty
};

// QEMU 7.2's MigrationCapability names (qapi/migration.json), in its order. sevemu implements
// `events`; the others can be queried and set to false, and setting one to true is refused
// (QUIRKS.md).
std::span<char const* const> migration_capability_names();

// The run state QEMU reports in place of the machine's own during a migration.
enum class MigrationRunState : uint8_t {
    None,
    InMigrate,     // -incoming: waiting for the stream, or loading it
    FinishMigrate, // the source is stopped and its stream is being written
    PostMigrate,   // the source after its migration ended with the guest stopped
};

class Migration {
public:
    // `emit` sends a MIGRATION event ({"status": NAME}); thread-safe, called from the machine's
    // thread or the job's threads.
    using EventSink = std::function<void(MigrationStatus)>;
    Migration(Machine&, EventSink emit);
    // Cancels a running job (killing an exec: command) and joins the job's threads.
    ~Migration();
    // The same, earlier: after Machine::run() has returned, while events can still be sent.
    void shutdown();
    Migration(Migration const&) = delete;
    Migration& operator=(Migration const&) = delete;

    // --- Capabilities (migrate-set-capabilities / query-migrate-capabilities). Any thread.
    bool capability(std::string_view name) const;
    // Checks them all before setting any: an unknown name, one sevemu does not implement set to
    // true, or a migration in progress is an error and nothing changes.
    Result<void, std::string> set_capabilities(std::vector<std::pair<std::string, bool>> const&);

    // --- Outgoing. On the machine's thread.
    // QEMU's migrate_prepare() checks, then the job: stops the machine, saves it, and starts the
    // writer. Errors the QMP command reports; a failure after setup is the job's status instead.
    Result<void, std::string> migrate(std::string_view uri);
    // migrate_cancel: a job that is still writing is cancelled (nothing happens otherwise).
    void cancel();
    MigrationInfo info() const;

    // --- Incoming.
    // Before run(): the machine (from Machine::create_incoming, paused) waits for a stream.
    // `deferred` is -incoming defer; `autostart` is false under -S.
    void expect_incoming(bool deferred, bool autostart);
    // Starts reading `uri` on a thread of the job; the load then runs on the machine's thread.
    // For -incoming URI (from main, before run) and QMP migrate-incoming (machine's thread):
    // QEMU's texts when there is no incoming migration to start or it has started already.
    // A failure's message starts with where the stream came from ("-incoming file:x",
    // "migrate-incoming file:x").
    Result<void, std::string> start_incoming(std::string_view uri, bool from_qmp);
    // After run() returned: why the incoming stream could not be loaded (the process then exits
    // with status 1, as QEMU exits on a failed incoming migration).
    std::optional<std::string> incoming_error() const;

    // --- Run state (machine's thread).
    MigrationRunState run_state() const;
    // A snapshot was loaded into this machine: its pauses are "paused", never "prelaunch".
    bool loaded() const;
    // QMP cont / stop as QEMU's qmp_cont()/qmp_stop() treat the migration run states: in
    // "inmigrate" they only choose whether the guest starts once loaded; cont in
    // "finish-migrate" is an error; cont in "postmigrate" runs the source's guest again.
    Result<void, std::string> cont();
    void stop();

private:
    struct Job;
    void set_status(MigrationStatus);
    void finish_outgoing(MigrationStatus end, std::string error);
    void load(std::vector<uint8_t> stream, std::string origin);

    Machine& m_machine;
    EventSink m_emit;

    mutable std::mutex m_mutex; // guards everything below that the job's threads touch
    bool m_events { false };
    MigrationStatus m_status { MigrationStatus::None };
    std::chrono::steady_clock::time_point m_start;
    int64_t m_setup_ms {}, m_total_ms {}, m_downtime_ms {};
    MigrationRamStats m_ram;
    std::string m_error;
    bool m_outgoing { false }; // the status is the source's (else the destination's)

    // Machine-thread state.
    MigrationRunState m_run_state { MigrationRunState::None };
    bool m_vm_was_running { false };
    bool m_incoming_expected { false };
    bool m_incoming_deferred { false };
    bool m_incoming_started { false };
    bool m_autostart { true };
    bool m_loaded { false };
    std::optional<std::string> m_incoming_error;

    std::shared_ptr<Job> m_job; // the writer or reader thread and its channel
};

} // namespace sevemu::emulator
