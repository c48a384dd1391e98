// sevemu — the QMP commands of a running machine (INTERFACES.md §4), with QEMU's names,
// arguments and error texts. Handlers run on the QMP thread and marshal their work to the
// machine's thread (Machine::post), so the machine is never touched from two threads.
#pragma once

#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/qmp/qmp.h"

namespace sevemu::cli {

// `migration` is the machine's snapshot job and run-state keeper (emulator/migration.h): the
// migration commands use it, and query-status, stop and cont consult it as QEMU's do.
qmp::CommandTable machine_commands(emulator::Machine&, emulator::Migration& migration);

// QEMU's MigrationInfo object (qapi/migration.json) for query-migrate.
qmp::Json migration_info_json(emulator::MigrationInfo const&);

} // namespace sevemu::cli
