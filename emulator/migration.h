// sevemu — snapshots with QEMU's migration interface: the transports (`file:PATH`, `exec:CMD`),
// the outgoing job (QMP `migrate`, `migrate_cancel`, `query-migrate`), the incoming side
// (`-incoming file:|exec:|defer`, QMP `migrate-incoming`), the migration capabilities and the
// run states QEMU shows around a migration ("inmigrate", "finish-migrate", "postmigrate").
//
// To file: and exec: a migration of a plain guest is an offline snapshot: the machine stops,
// Machine::save_snapshot() writes the whole stream (base/state_stream.h) into memory, and a
// writer thread of this job copies it to the file or to the command's stdin, so that neither the
// machine nor QMP waits on a slow consumer.
//
// Over tcp:HOST:PORT it is a live migration with iterative pre-copy, as QEMU's
// (migration/ram.c): the stream (version 2) opens with the "machine" and "ram" (layout, host key)
// sections; pass 1 sends every page of DRAM in "ram-pages" sections while the guest runs, with
// the memory controller's dirty-page log on; each later pass sends the pages written during the
// one before; once the pages left would go in less than the downtime limit (300 ms, QEMU's
// default downtime-limit) at the throughput measured so far, or after kMaxPasses passes, the
// vCPUs stop and the last dirty pages, the vCPU, clock and device state and the end record go.
// The target applies each RAM section once its CRC and records are checked (into a machine that
// has not run) and everything else only after the end record and stream CRC, then answers one
// line on the same connection ("OK" or why it refused) before its guest starts; the source
// completes (and stays in "postmigrate") only on that "OK": otherwise its guest runs on.
// A cancel, a lost connection or a refusal at any point leaves the source's guest running.
// The job's thread does the networking (Boost.Asio, blocking sockets, in migration.cpp only); it
// asks the machine's thread for each chunk of pages (Machine::post), so the guest runs between
// chunks, and QMP keeps answering throughout.
//
// Everything that touches the machine runs on its thread (Machine::post); the writer and reader
// threads touch only the job's own state, under its mutex.
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
#include <memory>
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

namespace sevemu {
class SnapshotWriter;
class StateWriter;
} // namespace sevemu

namespace sevemu::emulator {

class Machine;

// qapi/migration.json MigrationStatus (the subset an offline snapshot goes through).
enum class MigrationStatus : uint8_t { None, Setup, Cancelling, Cancelled, Active, Completed, Failed };
std::string_view migration_status_name(MigrationStatus);

// A migration URI of the offline forms: "file:PATH" (QEMU 8.2+) or "exec:CMD" (run as
// `/bin/sh -c CMD`, QEMU migration/exec.c).
// "tcp:HOST:PORT" (QEMU migration/socket.c; HOST may be a name, an IPv4 address or an IPv6
// address in brackets). Port 0 on -incoming takes any free port (query-migrate's socket-address
// on the target says which).
struct MigrationUri {
    enum class Kind : uint8_t { File, Exec, Tcp };
    Kind kind {};
    std::string target; // the path, the shell command, or the host
    uint16_t port {};   // tcp
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
    uint64_t dirty_pages_rate {}; // pages written per second by the guest, measured at the last sync
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
    // The target's listening address (QEMU 7.2 fill_destination_migration_info: socket-address).
    std::optional<std::pair<std::string, uint16_t>> socket_address;
};

// --- The SEV path's hook. How guest RAM goes into a live stream's "ram-pages" records and what a
// session adds around them (emulator/machine_state.cpp documents the records: kind 0 zero page,
// 1 raw page, 2..255 an encoder's own, as u32 length + bytes). A plain guest's encoder writes
// pages as DRAM holds them; the SEV encoder will write private pages as SEND_UPDATE_DATA packets
// and shared ones in the clear, its session data (SEND_START) in sections of its own.
class RamPageEncoder {
public:
    virtual ~RamPageEncoder() = default;
    // Before pass 1, on the machine's thread, after the "machine" and "ram" sections (SEV:
    // SEND_START with the target's PDH; the session goes into `out` as a section).
    virtual Result<void, std::string> begin(Machine&, SnapshotWriter& out) = 0;
    // One page (its SPA) as a record's kind and data, into `w` (u8 kind, then the kind's
    // bytes). Returns the kind, for query-migrate's "duplicate" and "normal" counts.
    virtual Result<uint8_t, std::string> encode_page(Machine&, uint64_t spa, StateWriter& w) = 0;
    // At the stop, after the last pages and before the vCPU and device sections (SEV:
    // SEND_UPDATE_VMSA, SEND_FINISH).
    virtual Result<void, std::string> finish(Machine&, SnapshotWriter& out) = 0;
    // The migration ended without completing: cancel, failure, lost connection, refusal (SEV:
    // SEND_CANCEL). The guest runs on.
    virtual void abort(Machine&) = 0;
};
// The target's side: the encoder's sections and records.
class RamPageDecoder {
public:
    virtual ~RamPageDecoder() = default;
    // Whether a section of this name is the session's (handed to session_section, not to the
    // Machine's load).
    virtual bool claims(std::string_view section) const = 0;
    virtual Result<void, std::string> session_section(Machine&, std::string_view name, uint32_t version,
        std::span<uint8_t const> payload) = 0;
    virtual Result<void, std::string> decode_page(Machine&, uint64_t spa, uint8_t kind, std::span<uint8_t const> data) = 0;
    // After the end record and the state's load, before the guest starts (SEV: RECEIVE_FINISH).
    virtual Result<void, std::string> finish(Machine&) = 0;
};
// The codec for this machine: plain today (pages as DRAM holds them, no decoder); the SEV helper
// returns its own for a machine with an SEV guest (which migration_blocker() refuses until then).
std::unique_ptr<RamPageEncoder> make_ram_page_encoder(Machine&);
std::unique_ptr<RamPageDecoder> make_ram_page_decoder(Machine&);

// Live migration's tuning, QEMU's defaults (qapi/migration.json MigrationParameters).
inline constexpr int64_t kDowntimeLimitMs = 300; // downtime-limit
inline constexpr unsigned kMaxPasses = 30;        // then stop-and-copy whatever is left

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

    // --- Parameters (migrate-set-parameters / query-migrate-parameters): downtime-limit, the
    // longest stop a live migration aims at (QEMU's default 300 ms). Any thread.
    int64_t downtime_limit_ms() const;
    Result<void, std::string> set_downtime_limit_ms(int64_t);
    // max-bandwidth: the pre-copy's rate limit in bytes per second; 0 (sevemu's default) is
    // none (QEMU 7.2's default is 128 MiB/s: QUIRKS.md).
    uint64_t max_bandwidth() const;
    Result<void, std::string> set_max_bandwidth(uint64_t bytes_per_second);

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
    struct LiveSource;
    void set_status(MigrationStatus);
    void finish_outgoing(MigrationStatus end, std::string error);
    void load(std::vector<uint8_t> stream, std::string origin);
    // Live migration over TCP (the job's thread).
    void run_tcp_source(std::shared_ptr<Job>, MigrationUri);
    void run_tcp_target(std::shared_ptr<Job>, std::string origin);
    void fail_incoming(std::string message);

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
    bool m_live { false };     // the outgoing job is a live (tcp:) migration
    int64_t m_expected_downtime_ms { kDowntimeLimitMs };
    int64_t m_downtime_limit_ms { kDowntimeLimitMs };
    uint64_t m_max_bandwidth { 0 };

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
    std::optional<std::pair<std::string, uint16_t>> m_listen_address; // -incoming tcp:, once bound
};

} // namespace sevemu::emulator
