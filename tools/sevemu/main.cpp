// sevemu — the emulator: runs a guest on the emulated AMD EPYC platform. The command line is
// qemu-system-x86_64's (INTERFACES.md §3); errors are one line on stderr and a non-zero status.
#include "base/main_guard.h"
#include "cpu/cpu_model.h"
#include "base/file_io.h"
#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/qmp/qmp.h"
#include "tools/sevemu/options.h"
#include "tools/sevemu/qmp_commands.h"

#include <memory>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

using namespace sevemu;

static int run(int argc, char** argv);

// An exception reaching main is a bug: base/main_guard.h.
int main(int argc, char** argv) { return run_guarded("sevemu", run, argc, argv); }

static int run(int argc, char** argv)
{
    std::vector<std::string> args(argv + 1, argv + argc);
    auto opts = cli::parse_options(args);
    if (!opts) {
        std::fprintf(stderr, "sevemu: %s\n", opts.error().message.c_str());
        return 1;
    }
    if (opts->help) {
        std::fputs(cli::usage().c_str(), stdout);
        return 0;
    }
    if (opts->version) {
        std::printf("sevemu version %s (qemu-system-x86_64 compatible command line)\n", SEVEMU_VERSION);
        return 0;
    }
    if (opts->list_cpus) {
        std::printf("Available CPU models:\n");
        for (auto m : kAllCpuModels) {
            auto const& info = cpu_model_info(m);
            std::printf("  %-12s %.*s\n", std::string(info.name).c_str(), int(info.brand.size()), info.brand.data());
        }
        return 0;
    }
    bool incoming = opts->incoming.has_value();
    if (opts->machine.kernel.empty() && !incoming) {
        std::fprintf(stderr, "sevemu: no -kernel given: nothing to run (see --help)\n");
        return 1;
    }
    if (incoming && !opts->machine.kernel.empty()) {
        // QEMU reads -kernel into its option ROM even with -incoming (a missing file is an
        // error), and the stream then replaces the guest. sevemu checks that the file can be
        // read, and does not load it: the snapshot carries the guest.
        if (auto k = read_regular_file(opts->machine.kernel, file_limits::kKernel); !k) {
            std::fprintf(stderr, "sevemu: -kernel %s\n", k.error().message.c_str());
            return 1;
        }
    }
    auto machine = incoming ? emulator::Machine::create_incoming(std::move(opts->machine))
                            : emulator::Machine::create(std::move(opts->machine));
    if (!machine) {
        std::fprintf(stderr, "sevemu: %s\n", machine.error().message.c_str());
        return 1;
    }
    auto& m = **machine;
    // -incoming: the machine waits in "inmigrate" and starts once the stream is loaded, unless
    // -S (QEMU's autostart); -S alone starts paused ("prelaunch").
    if (opts->start_paused || incoming)
        m.pause();

    // Events go to every negotiated QMP client (the migration job may send MIGRATION events from
    // its own threads; `servers` is filled before the machine runs and not changed after).
    std::vector<std::unique_ptr<qmp::Server>> servers;
    auto emit = [&servers](char const* name, qmp::Json const& data) {
        for (auto& s : servers)
            s->emit(name, data);
    };
    emulator::Migration migration(m, [&emit](emulator::MigrationStatus status) {
        emit("MIGRATION", qmp::Json { { "status", std::string(emulator::migration_status_name(status)) } });
    });

    // QMP sockets (-qmp).
    auto commands = cli::machine_commands(m, migration);
    std::vector<std::unique_ptr<qmp::Server>> started;
    for (auto const& spec : opts->qmp) {
        auto ep = qmp::parse_endpoint(spec);
        if (!ep) {
            std::fprintf(stderr, "sevemu: -qmp %s: %s\n", spec.c_str(), ep.error().c_str());
            return 1;
        }
        auto server = qmp::Server::start(*ep, commands);
        if (!server) {
            std::fprintf(stderr, "sevemu: -qmp %s: %s\n", spec.c_str(), server.error().c_str());
            return 1;
        }
        started.push_back(std::move(*server));
    }
    if (incoming) {
        migration.expect_incoming(*opts->incoming == "defer", !opts->start_paused);
        if (*opts->incoming != "defer") {
            // QEMU 7.2 qemu_init(): "-incoming URI: " and the error, exit status 1.
            if (auto r = migration.start_incoming(*opts->incoming, false); !r) {
                std::fprintf(stderr, "sevemu: -incoming %s: %s\n", opts->incoming->c_str(), r.error().c_str());
                return 1;
            }
        }
    }
    servers = std::move(started);
    m.set_event_sink([&emit, &m](emulator::Machine::Event e) {
        using Event = emulator::Machine::Event;
        if (e == Event::Reset || e == Event::GuestReset) {
            bool guest = e == Event::GuestReset; // a triple fault, the i8042 or 0xCF9
            emit("RESET", qmp::Json { { "guest", guest }, { "reason", guest ? "guest-reset" : "host-qmp-system-reset" } });
            return;
        }
        if (e != Event::Shutdown) {
            emit(e == Event::Stop ? "STOP" : "RESUME", qmp::Json::object());
            return;
        }
        // -no-shutdown: the guest ended but sevemu stays up for QMP until quit.
        auto const& end = *m.guest_ended();
        if (!end.message.empty())
            std::fprintf(stderr, "sevemu: %s\n", end.message.c_str());
        if (m.shut_down())
            emit("SHUTDOWN", qmp::Json { { "guest", true },
                                 { "reason", end.reason == emulator::RunOutcome::Reason::TripleFault ? "guest-reset" : "guest-shutdown" } });
    });
    for (size_t i = 0; i < servers.size(); ++i)
        if (qmp::parse_endpoint(opts->qmp[i])->wait)
            servers[i]->wait_for_client();

    auto outcome = m.run();
    // The snapshot job ends (an unfinished one is cancelled) while its events can still go out.
    migration.shutdown();
    if (auto err = migration.incoming_error()) {
        // QEMU exits with status 1 when an incoming migration fails to load, without a
        // SHUTDOWN event; the line names the part of the stream at fault.
        for (auto& s : servers)
            s->stop();
        std::fprintf(stderr, "sevemu: %s\n", err->c_str());
        return 1;
    }
    // QEMU's SHUTDOWN event: who asked, and why.
    using Reason = emulator::RunOutcome::Reason;
    bool by_guest = outcome.reason != Reason::Quit && outcome.reason != Reason::HostError && outcome.reason != Reason::ResetShutdown;
    char const* reason = outcome.reason == Reason::Quit ? "host-qmp-quit"
        : outcome.reason == Reason::ResetShutdown      ? "host-qmp-system-reset"
        : outcome.reason == Reason::HostError          ? "host-error"
        : outcome.reason == Reason::TripleFault        ? "guest-reset"
        : outcome.reason == Reason::GuestPanic         ? "guest-panic" // QEMU's ShutdownCause
                                                       : "guest-shutdown";
    emit("SHUTDOWN", qmp::Json { { "guest", by_guest }, { "reason", reason } });
    // Each server gives its clients a bounded moment to take the event (and the reply to
    // "quit"), then closes them: a client that never reads cannot hold the process. Several
    // servers stop side by side, so the wait does not add up.
    std::vector<std::thread> stoppers;
    for (auto& s : servers)
        stoppers.emplace_back([&s] { s->stop(); });
    for (auto& t : stoppers)
        t.join();
    if (!outcome.message.empty())
        std::fprintf(stderr, "sevemu: %s\n", outcome.message.c_str());
    return outcome.exit_status;
}
