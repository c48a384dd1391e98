// sevemu — the QEMU-compatible command line (INTERFACES.md §3), parsed into a MachineConfig.
// QEMU's conventions: single-dash long options (a double dash works too), "key=value,..."
// property lists, sizes with K/M/G/T suffixes (megabytes by default for -m).
#pragma once

#include "base/result.h"
#include "emulator/machine_config.h"

#include <optional>
#include <string>
#include <vector>

namespace sevemu::cli {

struct CliError {
    std::string message; // one line: "-opt value: what is wrong"
};

struct Options {
    emulator::MachineConfig machine;
    bool help { false };
    bool version { false };
    bool list_cpus { false };
    bool start_paused { false };   // -S
    std::vector<std::string> qmp;  // -qmp SPEC (repeatable)
    // -incoming file:PATH | exec:CMD | defer: build the machine empty and load a snapshot
    // (emulator/migration.h); the last one given counts, as in QEMU.
    std::optional<std::string> incoming;
};

Result<Options, CliError> parse_options(std::vector<std::string> const& args);

// QEMU's size syntax (qemu_strtosz): a number, optionally fractional, with an optional
// B/K/M/G/T/P/E suffix (either case); `default_unit` applies without a suffix.
std::optional<uint64_t> parse_size(std::string const& text, uint64_t default_unit);

// -m's argument ("SIZE" or "size=SIZE"), in bytes rounded up to pages, within the machine's
// bounds (2 MiB .. 1 TiB): what sevemu accepts, for tools that must agree with it.
Result<uint64_t, CliError> parse_memory(std::string const& arg);

std::string usage();

} // namespace sevemu::cli
