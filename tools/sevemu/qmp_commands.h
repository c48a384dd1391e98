// sevemu — the QMP commands of a running machine (INTERFACES.md §4), with QEMU's names,
// arguments and error texts. Handlers run on the QMP thread and marshal their work to the
// machine's thread (Machine::post), so the machine is never touched from two threads.
#pragma once

#include "emulator/machine.h"
#include "emulator/qmp/qmp.h"

namespace sevemu::cli {

qmp::CommandTable machine_commands(emulator::Machine&);

} // namespace sevemu::cli
