#include "tools/sevemu/qmp_commands.h"

#include "mmu/memory_controller.h"

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

} // namespace

qmp::CommandTable machine_commands(emulator::Machine& machine)
{
    qmp::CommandTable t;
    auto& m = machine;

    // query-status: QEMU's StatusInfo; "prelaunch" before the first cont of a -S start.
    t.add("query-status", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            std::string status = !mm.paused() ? "running" : (mm.started() ? "paused" : "prelaunch");
            return Json { { "running", !mm.paused() }, { "singlestep", false }, { "status", status } };
        });
    });
    t.add("stop", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.pause();
            return Json::object();
        });
    });
    t.add("cont", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.resume();
            return Json::object();
        });
    });
    t.add("quit", [&m](Json const&) {
        return on_machine(m, [](emulator::Machine& mm) -> Result<Json, Error> {
            mm.quit();
            return Json::object();
        });
    });
    t.add("system_reset", [](Json const&) -> Result<Json, Error> {
        return make_unexpected(qmp::generic_error("system_reset is not supported yet: sevemu cannot reset a machine (QUIRKS.md)"));
    });
    t.add("system_powerdown", [](Json const&) -> Result<Json, Error> {
        return make_unexpected(qmp::generic_error("system_powerdown is not supported yet: there is no ACPI power button (QUIRKS.md)"));
    });

    // pmemsave: system-physical memory as the hypervisor sees it — through the memory controller
    // with no key, so a guest's private pages come out as ciphertext.
    t.add("pmemsave", [&m](Json const& a) -> Result<Json, Error> {
        int64_t val = TRY(qmp::arg_int(a, "val"));
        int64_t size = TRY(qmp::arg_int(a, "size"));
        std::string filename = TRY(qmp::arg_string(a, "filename"));
        for (auto const& [key, value] : a.items())
            if (key != "val" && key != "size" && key != "filename" && key != "cpu-index")
                return make_unexpected(qmp::generic_error("Parameter '" + key + "' is unexpected"));
        if (val < 0 || size < 0)
            return make_unexpected(qmp::generic_error("Invalid parameter: 'val' and 'size' must not be negative"));
        return on_machine(m, [=](emulator::Machine& mm) -> Result<Json, Error> {
            FILE* f = std::fopen(filename.c_str(), "wb");
            if (!f)
                return make_unexpected(qmp::generic_error("Could not open '" + filename + "': " + std::strerror(errno)));
            std::vector<uint8_t> chunk(64 * 1024);
            uint64_t done = 0;
            while (done < uint64_t(size)) {
                size_t n = size_t(std::min<uint64_t>(chunk.size(), uint64_t(size) - done));
                auto r = mm.memory().read(Spa(uint64_t(val) + done), std::span(chunk.data(), n), mmu::KeyId::none());
                if (!r) {
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

    // The SEV commands exist (QEMU has them in every build) and say what QEMU says on a machine
    // without SEV; sevemu runs SEV guests from issue 5 on.
    for (char const* name : { "query-sev", "query-sev-launch-measure", "query-sev-capabilities", "sev-inject-launch-secret",
             "query-sev-attestation-report" })
        t.add(name, [](Json const&) -> Result<Json, Error> { return make_unexpected(sev_not_enabled()); });
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
