#include "tools/sevemu/qmp_commands.h"

#include "base/encoding.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace sevemu::cli {

using qmp::Error;
using qmp::Json;

namespace {

// Runs `fn` on the machine's thread and waits for its answer.
Result<Json, Error> on_machine(emulator::Machine& m, std::function<Result<Json, Error>(emulator::Machine&)> fn)
{
    auto promise = std::make_shared<std::promise<Result<Json, Error>>>();
    auto future = promise->get_future();
    if (!m.post([promise, fn = std::move(fn)](emulator::Machine& mm) { promise->set_value(fn(mm)); }))
        return make_unexpected(qmp::generic_error("the machine has stopped"));
    return future.get();
}

Error sev_not_enabled() { return qmp::generic_error("SEV is not enabled"); }

Error sev_error(emulator::SevError const& e) { return qmp::generic_error(e.message); }

} // namespace

Json migration_info_json(emulator::MigrationInfo const& info)
{
    // QEMU 7.2 fill_source_migration_info(): only what the status has; {} before any migration.
    Json j = Json::object();
    if (!info.blocked_reasons.empty())
        j["blocked-reasons"] = info.blocked_reasons;
    // fill_destination_migration_info(): the addresses a tcp: incoming migration listens on
    // whatever the status
    // (qapi/sockets.json SocketAddress, type "inet"; the port as a string).
    if (info.socket_address)
        j["socket-address"] = Json::array({ Json { { "type", "inet" }, { "host", info.socket_address->first },
            { "port", std::to_string(info.socket_address->second) } } });
    if (info.status == emulator::MigrationStatus::None)
        return j;
    j["status"] = std::string(emulator::migration_status_name(info.status));
    if (info.total_time_ms)
        j["total-time"] = *info.total_time_ms;
    if (info.setup_time_ms)
        j["setup-time"] = *info.setup_time_ms;
    if (info.downtime_ms)
        j["downtime"] = *info.downtime_ms;
    if (info.expected_downtime_ms)
        j["expected-downtime"] = *info.expected_downtime_ms;
    if (info.error_desc)
        j["error-desc"] = *info.error_desc;
    if (info.ram) {
        // populate_ram_info(): "skipped" is a legacy member, always 0; dirty-pages-rate and
        // remaining stay 0 once completed; no multifd, no postcopy, no zero-copy.
        auto const& r = *info.ram;
        j["ram"] = Json { { "transferred", r.transferred }, { "remaining", r.remaining }, { "total", r.total },
            { "duplicate", r.duplicate }, { "skipped", 0 }, { "normal", r.normal }, { "normal-bytes", r.normal_bytes },
            { "dirty-pages-rate", r.dirty_pages_rate }, { "mbps", r.mbps }, { "dirty-sync-count", r.dirty_sync_count },
            { "postcopy-requests", 0 }, { "page-size", r.page_size }, { "multifd-bytes", 0 },
            { "pages-per-second", r.pages_per_second }, { "precopy-bytes", r.precopy_bytes },
            { "downtime-bytes", r.downtime_bytes }, { "postcopy-bytes", 0 }, { "dirty-sync-missed-zero-copy", 0 } };
    }
    return j;
}

qmp::CommandTable machine_commands(emulator::Machine& machine, emulator::Migration& migration)
{
    // Every command declares its arguments (QEMU's QAPI schema, qapi/*.json); the session checks
    // them in one place before a handler runs (qmp::check_arguments). add(name, handler) declares
    // a command without arguments: any argument given is refused.
    qmp::CommandTable t;
    auto& m = machine;
    auto& mig = migration;
    constexpr auto Int = qmp::ArgType::Int;
    constexpr auto U64 = qmp::ArgType::Uint64;
    constexpr auto Str = qmp::ArgType::String;
    constexpr auto Bool = qmp::ArgType::Bool;
    constexpr auto Array = qmp::ArgType::Array;

    // query-status: QEMU's StatusInfo; "prelaunch" before the first cont of a -S start,
    // "inmigrate" while -incoming waits for its stream, "finish-migrate" while a snapshot is
    // written, "postmigrate" on the source once it is (qapi/run-state.json RunState).
    t.add("query-status", [&m, &mig](Json const&) {
        return on_machine(m, [&mig](emulator::Machine& mm) -> Result<Json, Error> {
            using RS = emulator::MigrationRunState;
            std::string status;
            switch (mig.run_state()) {
            case RS::InMigrate: status = "inmigrate"; break;
            case RS::FinishMigrate: status = "finish-migrate"; break;
            case RS::PostMigrate: status = "postmigrate"; break;
            case RS::None:
                status = mm.shut_down() ? "shutdown" : !mm.paused() ? "running" : (mm.started() || mig.loaded() ? "paused" : "prelaunch");
                break;
            }
            return Json { { "running", status == "running" }, { "singlestep", false }, { "status", status } };
        });
    });
    // QEMU 7.2 qmp_stop()/qmp_cont() (softmmu/cpus.c, monitor/qmp-cmds.c): in "inmigrate" they
    // only say whether the guest starts once its stream is loaded.
    t.add("stop", [&m, &mig](Json const&) {
        return on_machine(m, [&mig](emulator::Machine&) -> Result<Json, Error> {
            mig.stop();
            return Json::object();
        });
    });
    t.add("cont", [&m, &mig](Json const&) {
        return on_machine(m, [&mig](emulator::Machine& mm) -> Result<Json, Error> {
            if (mm.shut_down() && mig.run_state() == emulator::MigrationRunState::None) // QEMU: runstate_needs_reset()
                return make_unexpected(qmp::generic_error("Resetting the Virtual Machine is required"));
            if (auto r = mig.cont(); !r)
                return make_unexpected(qmp::generic_error(r.error()));
            return Json::object();
        });
    });

    // --- Instruction counts (qapi/replay.json). QEMU offers these while it replays a recorded
    // execution (-icount rr=replay); sevemu's execution is deterministic in every run (virtual
    // time is the instruction count), so they work without a recording: query-replay reports
    // mode "none" and the count, and replay-break stops the machine at a count (QUIRKS.md).
    t.add("query-replay", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            return Json { { "mode", "none" }, { "icount", mm.instructions_retired() } };
        });
    });
    // { 'command': 'replay-break', 'data': { 'icount': 'int' } }
    t.add("replay-break", { { "icount", Int, true } }, [&m](Json const& a) -> Result<Json, Error> {
        int64_t icount = TRY(qmp::arg_int(a, "icount"));
        return on_machine(m, [icount](emulator::Machine& mm) -> Result<Json, Error> {
            // QEMU replay/replay-debugging.c qmp_replay_break().
            if (icount < 0 || uint64_t(icount) < mm.instructions_retired())
                return make_unexpected(qmp::generic_error("cannot set breakpoint at the instruction in the past"));
            mm.set_instruction_breakpoint(uint64_t(icount));
            return Json::object();
        });
    });
    t.add("replay-delete-break", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.set_instruction_breakpoint(std::nullopt);
            return Json::object();
        });
    });

    // --- Snapshots through QEMU's migration commands (qapi/migration.json, QEMU 7.2).
    // { 'command': 'migrate', 'data': {'uri': 'str', '*blk': 'bool', '*inc': 'bool',
    //   '*detach': 'bool', '*resume': 'bool' } }
    t.add("migrate", { { "uri", Str, true }, { "blk", Bool, false }, { "inc", Bool, false }, { "detach", Bool, false }, { "resume", Bool, false } },
        [&m, &mig](Json const& a) -> Result<Json, Error> {
        std::string uri = TRY(qmp::arg_string(a, "uri"));
        bool blk = TRY(qmp::arg_opt_bool(a, "blk")).value_or(false);
        bool inc = TRY(qmp::arg_opt_bool(a, "inc")).value_or(false);
        bool resume = TRY(qmp::arg_opt_bool(a, "resume")).value_or(false);
        // "detach" is ignored, as QEMU ignores it.
        return on_machine(m, [&mig, uri, blk, inc, resume](emulator::Machine&) -> Result<Json, Error> {
            if (resume) // migrate_prepare(): only a paused postcopy migration resumes
                return make_unexpected(qmp::generic_error("Cannot resume if there is no paused migration"));
            if (blk || inc)
                return make_unexpected(qmp::generic_error("Block migration is unsupported: sevemu has no block devices"));
            if (auto r = mig.migrate(uri); !r)
                return make_unexpected(qmp::generic_error(r.error()));
            return Json::object();
        });
    });
    t.add("migrate_cancel", [&m, &mig](Json const&) {
        return on_machine(m, [&mig](emulator::Machine&) -> Result<Json, Error> {
            mig.cancel();
            return Json::object();
        });
    });
    t.add("query-migrate", [&m, &mig](Json const&) {
        return on_machine(m, [&mig](emulator::Machine&) -> Result<Json, Error> { return migration_info_json(mig.info()); });
    });
    // { 'command': 'migrate-incoming', 'data': {'uri': 'str' } }
    t.add("migrate-incoming", { { "uri", Str, true } }, [&m, &mig](Json const& a) -> Result<Json, Error> {
        std::string uri = TRY(qmp::arg_string(a, "uri"));
        return on_machine(m, [&mig, uri](emulator::Machine&) -> Result<Json, Error> {
            if (auto r = mig.start_incoming(uri, true); !r)
                return make_unexpected(qmp::generic_error(r.error()));
            return Json::object();
        });
    });
    // { 'command': 'migrate-set-capabilities', 'data': { 'capabilities': ['MigrationCapabilityStatus'] } }
    // MigrationCapabilityStatus is { 'capability': 'MigrationCapability', 'state': 'bool' }; the
    // elements are checked as QEMU's input visitor names them ("capabilities[0].state").
    t.add("migrate-set-capabilities", { { "capabilities", Array, true } }, [&mig](Json const& a) -> Result<Json, Error> {
        std::vector<std::pair<std::string, bool>> caps;
        auto const& list = a["capabilities"];
        auto names = emulator::migration_capability_names();
        for (size_t i = 0; i < list.size(); ++i) {
            std::string at = fmt::format("capabilities[{}]", i);
            auto const& e = list[i];
            if (!e.is_object())
                return make_unexpected(qmp::generic_error(fmt::format("Invalid parameter type for '{}', expected: object", at)));
            if (!e.contains("capability"))
                return make_unexpected(qmp::generic_error(fmt::format("Parameter '{}.capability' is missing", at)));
            if (!e["capability"].is_string())
                return make_unexpected(qmp::generic_error(fmt::format("Invalid parameter type for '{}.capability', expected: string", at)));
            std::string name = e["capability"].get<std::string>();
            if (std::find_if(names.begin(), names.end(), [&](char const* n) { return name == n; }) == names.end())
                return make_unexpected(qmp::generic_error(fmt::format("Parameter '{}.capability' does not accept value '{}'", at, name)));
            if (!e.contains("state"))
                return make_unexpected(qmp::generic_error(fmt::format("Parameter '{}.state' is missing", at)));
            if (!e["state"].is_boolean())
                return make_unexpected(qmp::generic_error(fmt::format("Invalid parameter type for '{}.state', expected: boolean", at)));
            for (auto const& item : e.items())
                if (item.key() != "capability" && item.key() != "state")
                    return make_unexpected(qmp::generic_error(fmt::format("Parameter '{}.{}' is unexpected", at, item.key())));
            caps.emplace_back(name, e["state"].get<bool>());
        }
        if (auto r = mig.set_capabilities(caps); !r)
            return make_unexpected(qmp::generic_error(r.error()));
        return Json::object();
    });
    // { 'command': 'migrate-set-parameters', 'data': 'MigrateSetParameters' }: sevemu has one of
    // QEMU 7.2's parameters, downtime-limit (ms); any other member is refused as unexpected.
    t.add("migrate-set-parameters", { { "downtime-limit", Int, false }, { "max-bandwidth", U64, false } },
        [&mig](Json const& a) -> Result<Json, Error> {
            // Both checked before either is set (QEMU migrate_params_check, then apply).
            if (a.contains("downtime-limit")) {
                int64_t v = a["downtime-limit"].get<int64_t>();
                if (v < 0 || v > 2'000'000)
                    return make_unexpected(qmp::generic_error(
                        "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds"));
            }
            if (a.contains("max-bandwidth"))
                if (auto r = mig.set_max_bandwidth(a["max-bandwidth"].get<uint64_t>()); !r)
                    return make_unexpected(qmp::generic_error(r.error()));
            if (a.contains("downtime-limit"))
                (void)mig.set_downtime_limit_ms(a["downtime-limit"].get<int64_t>());
            return Json::object();
        });
    t.add("query-migrate-parameters", [&mig](Json const&) -> Result<Json, Error> {
        return Json { { "downtime-limit", mig.downtime_limit_ms() }, { "max-bandwidth", mig.max_bandwidth() } };
    });
    t.add("query-migrate-capabilities", [&mig](Json const&) -> Result<Json, Error> {
        Json list = Json::array();
        for (char const* name : emulator::migration_capability_names())
            list.push_back({ { "capability", name }, { "state", mig.capability(name) } });
        return list;
    });
    t.add("quit", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.quit();
            return Json::object();
        });
    });
    t.add("system_reset", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            if (auto r = mm.system_reset(); !r)
                return make_unexpected(qmp::generic_error(r.error().message));
            return Json::object();
        });
    });
    // qapi/misc.json: { 'command': 'inject-nmi' } — every vCPU's LINT1 (Machine::inject_nmi).
    t.add("inject-nmi", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.inject_nmi();
            return Json::object();
        });
    });
    t.add("system_powerdown", [](Json const&) -> Result<Json, Error> {
        return make_unexpected(qmp::generic_error("system_powerdown is not supported yet: there is no ACPI power button (QUIRKS.md)"));
    });

    // pmemsave: system-physical memory as the hypervisor sees it — through the memory controller
    // with no key, so a guest's private pages come out as ciphertext.
    // qapi/misc.json: { 'command': 'pmemsave', 'data': {'val': 'int', 'size': 'int', 'filename': 'str'} }
    t.add("pmemsave", { { "val", Int, true }, { "size", Int, true }, { "filename", Str, true } }, [&m](Json const& a) -> Result<Json, Error> {
        int64_t val = TRY(qmp::arg_int(a, "val"));
        int64_t size = TRY(qmp::arg_int(a, "size"));
        std::string filename = TRY(qmp::arg_string(a, "filename"));
        if (val < 0 || size < 0)
            return make_unexpected(qmp::generic_error("Invalid parameter: 'val' and 'size' must not be negative"));
        return on_machine(m, [=](emulator::Machine& mm) -> Result<Json, Error> {
            // On an SEV machine `val` is guest-physical, as in QEMU, read through the memory slots
            // with no key: what the hypervisor sees. Without SEV, guest-physical is DRAM.
            auto read = [&mm](uint64_t addr, std::span<uint8_t> out) -> bool {
                if (auto* sev = mm.sev())
                    return sev->read_guest_physical(addr, out);
                return mm.memory().read(Spa(addr), out, mmu::KeyId::none()).has_value();
            };
            FILE* f = std::fopen(filename.c_str(), "wb");
            if (!f)
                return make_unexpected(qmp::generic_error("Could not open '" + filename + "': " + std::strerror(errno)));
            std::vector<uint8_t> chunk(64 * 1024);
            uint64_t done = 0;
            while (done < uint64_t(size)) {
                size_t n = size_t(std::min<uint64_t>(chunk.size(), uint64_t(size) - done));
                if (!read(uint64_t(val) + done, std::span(chunk.data(), n))) {
                    std::fclose(f);
                    std::remove(filename.c_str());
                    return make_unexpected(qmp::generic_error(fmt::format("Invalid addr 0x{:x}/size {} specified: not guest RAM", uint64_t(val) + done, n)));
                }
                if (std::fwrite(chunk.data(), 1, n, f) != n) {
                    std::fclose(f);
                    return make_unexpected(qmp::generic_error("writing memory to '" + filename + "' failed"));
                }
                done += n;
            }
            std::fclose(f);
            return Json::object();
        });
    });

    // The SEV commands (qapi/misc-target.json). On a machine without SEV they say what QEMU
    // says there. Each runs on the machine's thread; every value comes from the firmware.
    t.add("query-sev", [&m](Json const&) -> Result<Json, Error> {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            auto* sev = mm.sev();
            if (!sev)
                return make_unexpected(sev_not_enabled());
            auto info = sev->query();
            if (!info)
                return make_unexpected(sev_error(info.error()));
            return Json { { "enabled", true }, { "api-major", info->api_major }, { "api-minor", info->api_minor },
                { "build-id", info->build_id }, { "policy", info->policy },
                { "state", std::string(emulator::sev_state_name(info->state)) }, { "handle", info->handle },
                { "sev-type", "sev" } };
        });
    });
    t.add("query-sev-capabilities", [&m](Json const&) -> Result<Json, Error> {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            auto* sev = mm.sev();
            if (!sev)
                return make_unexpected(sev_not_enabled());
            auto cap = sev->capabilities();
            if (!cap)
                return make_unexpected(sev_error(cap.error()));
            return Json { { "pdh", to_base64(cap->pdh) }, { "cert-chain", to_base64(cap->cert_chain) },
                { "cpu0-id", to_base64(cap->cpu0_id) }, { "cbitpos", cap->cbitpos },
                { "reduced-phys-bits", cap->reduced_phys_bits } };
        });
    });
    // QEMU's out-of-tree SEV migration series (qapi/migration.json): { 'command':
    // 'migrate-set-sev-info', 'data': { 'pdh': 'str', 'plat-cert': 'str', 'amd-cert': 'str' } },
    // base64 each: the target's PDH (its query-sev-capabilities "pdh"), its PEK, OCA and
    // ASK-signed CEK, and the ASK and ARK (`sevemu-host export --full` on the target's platform).
    // The series also named it migrate-sev-set-info; both are accepted.
    for (char const* name : { "migrate-set-sev-info", "migrate-sev-set-info" }) {
        t.add(name, { { "pdh", Str, true }, { "plat-cert", Str, true }, { "amd-cert", Str, true } },
            [&m](Json const& a) -> Result<Json, Error> {
            std::string pdh = TRY(qmp::arg_string(a, "pdh"));
            std::string plat = TRY(qmp::arg_string(a, "plat-cert"));
            std::string amd = TRY(qmp::arg_string(a, "amd-cert"));
            return on_machine(m, [=](emulator::Machine& mm) -> Result<Json, Error> {
                auto* sev = mm.sev();
                if (!sev)
                    return make_unexpected(sev_not_enabled());
                auto pdh_b = from_base64(pdh), plat_b = from_base64(plat), amd_b = from_base64(amd);
                if (!pdh_b || !plat_b || !amd_b)
                    return make_unexpected(qmp::generic_error(fmt::format("SEV: failed to decode {} (base64 expected)",
                        !pdh_b ? "pdh" : !plat_b ? "plat-cert" : "amd-cert")));
                if (auto r = sev->set_migration_target(std::move(*pdh_b), std::move(*plat_b), std::move(*amd_b)); !r)
                    return make_unexpected(sev_error(r.error()));
                return Json::object();
            });
        });
    }
    t.add("query-sev-launch-measure", [&m](Json const&) -> Result<Json, Error> {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            auto* sev = mm.sev();
            if (!sev)
                return make_unexpected(sev_not_enabled());
            auto data = sev->launch_measurement();
            if (!data)
                return make_unexpected(sev_error(data.error()));
            return Json { { "data", to_base64(*data) } };
        });
    });
    // qapi/misc-target.json: { 'command': 'sev-inject-launch-secret',
    //   'data': { 'packet-header': 'str', 'secret': 'str', '*gpa': 'uint64' } }
    t.add("sev-inject-launch-secret", { { "packet-header", Str, true }, { "secret", Str, true }, { "gpa", U64, false } },
        [&m](Json const& a) -> Result<Json, Error> {
        std::string header = TRY(qmp::arg_string(a, "packet-header"));
        std::string secret = TRY(qmp::arg_string(a, "secret"));
        auto gpa = TRY(qmp::arg_opt_uint64(a, "gpa"));
        return on_machine(m, [=](emulator::Machine& mm) -> Result<Json, Error> {
            auto* sev = mm.sev();
            if (!sev)
                return make_unexpected(sev_not_enabled());
            // QEMU takes the default from OVMF's secret area (SEV_SECRET_GUID); sevemu boots
            // without guest firmware, so the address must be given.
            if (!gpa)
                return make_unexpected(qmp::generic_error("SEV: no secret area found in OVMF, gpa must be specified."));
            Bytes hdr = from_base64(header).value_or(Bytes {});
            Bytes data = from_base64(secret).value_or(Bytes {});
            if (auto r = sev->inject_launch_secret(hdr, data, *gpa); !r)
                return make_unexpected(sev_error(r.error()));
            return Json::object();
        });
    });
    // qapi/misc-target.json: { 'command': 'query-sev-attestation-report', 'data': { 'mnonce': 'str' } }
    t.add("query-sev-attestation-report", { { "mnonce", Str, true } }, [&m](Json const& a) -> Result<Json, Error> {
        std::string mnonce = TRY(qmp::arg_string(a, "mnonce"));
        return on_machine(m, [=](emulator::Machine& mm) -> Result<Json, Error> {
            auto* sev = mm.sev();
            if (!sev)
                return make_unexpected(sev_not_enabled());
            auto nonce = from_base64(mnonce);
            if (!nonce)
                return make_unexpected(qmp::generic_error("SEV: failed to decode mnonce input"));
            auto report = sev->attestation_report(*nonce);
            if (!report)
                return make_unexpected(sev_error(report.error()));
            return Json { { "data", to_base64(*report) } };
        });
    });
    auto names = t.names();
    names.push_back("query-commands");
    names.push_back("qmp_capabilities");
    t.add("query-commands", [names](Json const&) -> Result<Json, Error> {
        Json list = Json::array();
        for (auto const& n : names)
            list.push_back({ { "name", n } });
        return list;
    });
    return t;
}

} // namespace sevemu::cli
