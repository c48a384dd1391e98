// sevemu — Machine: owns every part of one emulated AMD EPYC PC (STYLE.md rule 1, no globals):
// the memory controller (the only door to DRAM), the port-I/O and MMIO buses, the devices, the
// clock, the vCPUs and the trace; on the board also the AMD-SP, on a host-only MMIO bus the
// guest cannot reach; for an SEV guest the hypervisor that runs the guest on the vCPUs with
// VMRUN, talking to that AMD-SP through its mailbox (SevRuntime). Built from one MachineConfig;
// two Machines in a process share nothing.
//
//     auto m = TRY(Machine::create(config));   // validates, allocates, loads -kernel
//     RunOutcome out = m->run();               // until debug-exit, power-off, triple fault...
//     return out.exit_status;                  // what `sevemu` exits with (QEMU's conventions)
//
// Plain and SEV guests share one run loop: each vCPU runs a time slice and reports a VcpuExit
// (emulator/vcpu.h); handle_exit() is the one place that turns it into what the machine does.
// With -smp N the loop runs in rounds on the machine's one thread: every runnable vCPU, in vCPU
// order, runs one slice of at most kSmpQuantum instructions (never past the next timer
// deadline) while the others wait; the clock counts every vCPU's instructions
// (emulator/clock.h), so a run repeats exactly.
// A vCPU waiting for a SIPI or halted without a takeable interrupt does not run; the machine
// skips ahead to the next timer deadline only when no vCPU can run.
#pragma once

#include "base/result.h"
#include "base/trace.h"
#include "devices/apic_bus.h"
#include "devices/bus.h"
#include "devices/device.h"
#include "emulator/boot.h"
#include "emulator/irq_router.h"
#include "emulator/linux_boot.h"
#include "emulator/machine_config.h"
#include "emulator/multiboot.h"
#include "emulator/vcpu.h"

#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sevemu::mmu {
class MemoryController;
}
namespace sevemu::cpu {
class Cpu;
}
namespace sevemu::devices {
class AmdSp;
class InterruptController;
class Uart16550;
class DebugExit;
class PostPort;
class Pic8259Pair;
class Pit8254;
class CmosRtc;
class AcpiPm;
class LocalApic;
class IoApic;
class I8042;
class PciHost;
}

namespace sevemu {
class SnapshotWriter;
struct SnapshotSection;
} // namespace sevemu

namespace sevemu::emulator {

class MachineClock;
class MachineIo;
class SevRuntime;

// A user-facing failure to build or start a machine: one line for the CLI.
struct MachineError {
    std::string message;
};

struct RunOutcome {
    enum class Reason : uint8_t {
        DebugExit,        // isa-debug-exit: status (V << 1) | 1
        PowerOff,         // the guest turned the machine off (ACPI S5): status 0
        HaltedForever,    // HLT with nothing that could wake it: status 0 (QUIRKS.md)
        TripleFault,      // shutdown with -no-reboot: status 0, as QEMU; an SEV guest (which
                          // cannot be relaunched) also ends here without it: status 1
        InstructionLimit, // MachineConfig::max_instructions reached: status 1
        Quit,             // QMP quit (or the embedder's request_quit): status 0
        ResetShutdown,    // QMP system_reset with -no-reboot: status 0
        HostError,        // the hypervisor could not go on (SEV: a failed VMRUN or launch): status 1
        GuestPanic,       // an SEV-ES guest asked to be terminated (GHCB termination request):
                          // status 1, as QEMU with -action panic=exit-failure (QUIRKS.md)
    };
    Reason reason;
    int exit_status;
    std::string message; // empty for DebugExit and PowerOff
    uint64_t instructions;
};

class Machine {
public:
    static Result<std::unique_ptr<Machine>, MachineError> create(MachineConfig config);
    // A machine built to receive a snapshot (`-incoming`, QEMU's "inmigrate"): the board, its
    // devices and CPUs at reset, nothing loaded; load_snapshot() gives it its guest.
    static Result<std::unique_ptr<Machine>, MachineError> create_incoming(MachineConfig config);
    ~Machine();
    Machine(Machine const&) = delete;
    Machine& operator=(Machine const&) = delete;

    RunOutcome run();

    // Parts, for tests, tools and (later) the VMM and QMP.
    MachineConfig const& config() const { return m_config; }
    mmu::MemoryController& memory() { return *m_memory; }
    devices::Bus& pio() { return m_pio; }
    devices::Bus& mmio() { return m_mmio; }
    // The vCPUs (-smp N; vCPU i has APIC ID i, vCPU 0 is the BSP). cpu() is vCPU 0's core.
    std::vector<Vcpu>& vcpus() { return m_vcpus; }
    cpu::Cpu& cpu() { return m_vcpus.front().cpu(); }
    Trace& trace() { return m_trace; }
    // The device list: reset, saved and restored in this order; each device with where it sits
    // on the guest's buses. The typed accessors below are lookups into it.
    struct DevicePlacement {
        enum class Space : uint8_t { Pio, Mmio };
        Space space;
        uint64_t base;
        uint64_t length;
        devices::BusDevice* port;
    };
    struct DeviceEntry {
        std::unique_ptr<devices::Device> device;
        std::vector<DevicePlacement> placements;
    };
    std::vector<DeviceEntry> const& devices() const { return m_devices; }
    IrqRouter& irq_router() { return m_irq_router; }
    devices::Uart16550& uart() { return *m_uart; }
    devices::PostPort& post_port() { return *m_post; }
    devices::Pic8259Pair& pic() { return *m_pic; }
    devices::Pit8254& pit() { return *m_pit; }
    devices::CmosRtc& rtc() { return *m_rtc; }
    devices::AcpiPm& acpi_pm() { return *m_acpi_pm; }
    // vCPU i's local APIC (APIC ID i), the IOAPIC, the keyboard controller, the PCI host bridge.
    devices::LocalApic& lapic(size_t vcpu) { return *m_lapics.at(vcpu); }
    devices::IoApic& ioapic() { return *m_ioapic; }
    devices::I8042& i8042() { return *m_i8042; }
    devices::PciHost& pci_host() { return *m_pci_host; }
    // The most vCPUs -smp accepts.
    static constexpr uint32_t kMaxVcpus = emulator::kMaxVcpus;
    // Instructions per vCPU and round when -smp > 1 (one vCPU runs slices of kRunSlice).
    static constexpr uint64_t kSmpQuantum = 100'000;
    // The SEV runtime (PSP driver, KVM-like VM and vCPU) when the machine runs an SEV guest
    // (-object sev-guest); null otherwise. See emulator/sev_runtime.h.
    SevRuntime* sev() { return m_sev.get(); }
    // The board's AMD-SP (firmware and PSP mailbox, on the host-only MMIO bus host_mmio()).
    // It holds the platform directory (--platform): an SEV guest opens it when it is built; a
    // plain guest never needs it, so it is opened on first use here, and a plain guest runs
    // without a platform directory (or with a read-only one).
    Result<devices::AmdSp*, MachineError> amd_sp();
    devices::AmdSp* amd_sp_if_open() { return m_amd_sp.get(); }
    devices::Bus& host_mmio() { return m_host_mmio; }

    // The machine's virtual time in nanoseconds since power-on (emulator/clock.h): one
    // instruction (of any vCPU: they take turns) is one nanosecond, and a machine whose vCPUs
    // all halt skips ahead to the next timer event (QUIRKS.md).
    int64_t now_ns() const;
    MachineClock& clock() { return *m_clock; }
    std::vector<E820Entry> const& memory_map() const { return m_memory_map; }
    std::optional<MultibootBoot> const& multiboot() const { return m_boot; }
    // The Linux loader's description when -kernel was a bzImage or a PVH vmlinux.
    std::optional<LinuxBoot> const& linux_boot() const { return m_linux_boot; }
    // The guest-physical ranges the kernel loader wrote (an SEV launch measured exactly these).
    std::vector<GuestRange> const& boot_ranges() const { return m_boot_ranges; }

    // Asks run() to end the guest with a power-off (status 0) after the current instruction.
    void request_power_off();
    // A guest's reset request (i8042 command 0xFE, a write of 0x06/0x0E to 0xCF9, a triple
    // fault): after the current instruction, system_reset(ResetCause::Guest) (with -no-reboot:
    // the run ends, ResetShutdown).
    void request_reset();
    // QMP inject-nmi: an NMI to every vCPU as QEMU's x86_nmi (hw/i386/x86.c) gives it, through
    // each LAPIC's LINT1 (apic_deliver_nmi), so the LVT decides (masked: nothing; disabled
    // APIC: the NMI pin). On the machine's thread.
    void inject_nmi();

    // --- Control from other threads (QMP). A request runs on the machine's thread between
    // run slices, and also while the machine is paused. Returns false once run() has returned
    // (the request then never runs). Thread-safe.
    // `interrupt` false: the running vCPU finishes its time slice first (a background job, live
    // migration's RAM copy, that must not starve the guest by cutting every slice short).
    bool post(std::function<void(Machine&)> request, bool interrupt = true);
    // On the machine's thread (inside a request, or before run()):
    void pause();                  // QMP stop; -S starts paused ("prelaunch")
    void resume();                 // QMP cont
    bool paused() const { return m_paused; }
    bool started() const { return m_started; } // has run at least once since power-on
    void quit() { m_quit = true; }             // QMP quit: run() returns Reason::Quit
    // QMP system_reset (QEMU's qemu_system_reset_request): devices and CPU back to their reset
    // state and the -kernel hand-off again (the Multiboot loader reloads the image, as QEMU's
    // option ROM does); RAM keeps its other contents. A machine that had ended (-no-shutdown)
    // comes back paused, as QEMU's goes to "prelaunch". With -no-reboot a reset is a shutdown:
    // run() returns Reason::ResetShutdown. SEV guests cannot be relaunched: an error.
    // `cause` only picks the event: Event::Reset for the host's (QMP), Event::GuestReset for the
    // guest's (QEMU's SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET / SHUTDOWN_CAUSE_GUEST_RESET).
    enum class ResetCause : uint8_t { Host, Guest };
    Result<void, MachineError> system_reset(ResetCause cause = ResetCause::Host);
    // With -no-shutdown: how the guest ended (power-off, triple fault, or a halt nothing can
    // wake) while the machine stays up; the guest never runs again. A shut-down machine is
    // paused (QEMU's "shutdown" run state: cont needs a reset).
    std::optional<RunOutcome> const& guest_ended() const { return m_guest_ended; }
    bool shut_down() const { return m_guest_ended && m_guest_ended->reason != RunOutcome::Reason::HaltedForever; }

    // --- Snapshots (the stream is base/state_stream.h's; the sections a machine writes, their
    // versions and the load's order are in emulator/machine_state.cpp's header comment). On
    // the machine's thread between time slices: in a request while paused, or before or after
    // run().
    // Why this machine cannot be snapshotted (`live` false: file:, exec:) or migrated live
    // (`live`: tcp:), if it cannot (QEMU's migration blockers). An SEV guest's pages are
    // ciphertext under a key that never leaves the AMD-SP: it is never snapshotted, and migrates
    // live only through the firmware's SEND_* commands, once the guest set KVM_MIGRATION_READY
    // and migrate-set-sev-info gave the target's certificates (emulator/sev_migration.cpp).
    std::optional<std::string> migration_blocker(bool live = false) const;
    Result<std::vector<uint8_t>, MachineError> save_snapshot();
    // Only into a machine from create_incoming() that has not run. The whole stream is checked
    // before anything is applied; on failure the message names the section ("snapshot section
    // 'pit': ...") and the machine is as it was (still awaiting a snapshot).
    Result<void, MachineError> load_snapshot(std::span<uint8_t const> stream);
    bool incoming() const { return m_incoming; }

    // --- Live migration (emulator/migration.cpp): the same sections in a version-2 stream, RAM
    // in repeated "ram-pages" sections while the guest runs (machine_state.cpp's comment).
    // Source, between time slices: the sections that open the stream ("machine", and "ram" at
    // version 2: the layout and the host key), and those that close it once the vCPUs are
    // stopped, after the last RAM pass ("clock", the vCPUs, the devices, "amd-sp").
    Result<void, MachineError> save_live_prologue(SnapshotWriter&);
    Result<void, MachineError> save_live_epilogue(SnapshotWriter&);
    // Target: the "machine" section checked against this machine as soon as it arrives.
    Result<void, MachineError> check_snapshot_machine(SnapshotSection const&) const;
    // Target: one CRC-checked "ram-pages" payload, checked whole and then written into DRAM.
    // Only while awaiting a snapshot (the guest never runs before load_live_state succeeds).
    // Page kinds other than zero and raw go to `decode` (the SEV path's packets); without one
    // they are refused.
    using PageDecoder = std::function<Result<void, std::string>(uint64_t spa, uint8_t kind, std::span<uint8_t const> data)>;
    Result<void, MachineError> load_ram_pages(std::span<uint8_t const> payload, PageDecoder const& decode = {});
    // Target, once the end record is verified: every other section, as load_snapshot() loads them
    // ("ram" at version 2; its pages are in DRAM already).
    Result<void, MachineError> load_live_state(std::span<SnapshotSection const> sections, uint64_t stream_bytes);
    // An incoming machine whose snapshot has not been loaded yet: run() serves requests but
    // runs no guest code (QEMU's "inmigrate") until load_snapshot() succeeds.
    bool awaiting_snapshot() const { return m_incoming && !m_restored; }

    // --- Instruction counting (QMP query-replay, replay-break). The instructions the vCPUs have
    // retired since power-on (a restored machine goes on from its snapshot's count), and a
    // breakpoint: when the count reaches it, run() pauses the machine there (a STOP event) and
    // clears it, as QEMU's replay_break() stops a replayed VM at an instruction count. The
    // machine is deterministic, so the same count is the same guest state in every run.
    uint64_t instructions_retired() const;
    void set_instruction_breakpoint(std::optional<uint64_t> icount) { m_break_icount = icount; }
    std::optional<uint64_t> instruction_breakpoint() const { return m_break_icount; }

    // State changes, for QMP events (called on the machine's thread). Shutdown: the guest ended
    // under -no-shutdown (guest_ended() says how: a SHUTDOWN event unless it merely halted);
    // without -no-shutdown run() returns instead.
    // Reset: a system_reset() the host asked for (QMP RESET "host-qmp-system-reset");
    // GuestReset: one the guest caused (a triple fault, i8042, 0xCF9: "guest-reset").
    enum class Event : uint8_t { Stop, Resume, Shutdown, Reset, GuestReset };
    void set_event_sink(std::function<void(Event)> sink) { m_event_sink = std::move(sink); }

private:
    explicit Machine(MachineConfig config);
    Result<void, MachineError> build();
    Result<void, MachineError> load_kernel();
    // load_snapshot()'s work after the stream's own checks (machine_state.cpp).
    Result<void, MachineError> load_sections(std::span<SnapshotSection const>, uint64_t stream_bytes, bool pages_in_dram);
    void write_machine_section(SnapshotWriter&) const;
    Result<void, MachineError> check_ram_pages(SnapshotSection const&, PageDecoder const&);
    void apply_firmware_mtrrs_to_vcpus();
    void serial_out(uint8_t byte);
    void flush_serial();
    // -serial stdio also reads stdin into COM1's receiver (as QEMU does). wait_ms < 0 blocks
    // until input or EOF; returns whether bytes arrived.
    bool poll_serial_input(int wait_ms);
    // No vCPU can run (all halted or waiting for a SIPI): skip virtual time to the next timer
    // event, or wait for serial input. Interrupt: one can now be taken; Request: a QMP request arrived while waiting (the
    // vCPU stays halted, the loop serves it); Never: nothing can ever wake the guest.
    enum class Wake : uint8_t { Interrupt, Request, Never };
    Wake sleep_until_interrupt();
    // Whether vCPU i can run now (not waiting for a SIPI; not halted, or halted with an
    // interrupt it can take), after applying its LAPIC's pending INIT and SIPI.
    bool runnable(size_t i);
    void apply_apic_events(size_t i);
    // Timers: advance every timer device to `now`; the earliest deadline after it.
    void advance_timers(int64_t now);
    std::optional<int64_t> next_timer_deadline(int64_t now) const;
    // Moves the clock (and every vCPU's TSC with it) ahead by ns.
    void skip_time(int64_t ns);
    void stop_vcpus();
    Result<void, MachineError> add_device(std::unique_ptr<devices::Device>, std::initializer_list<DevicePlacement>);
    // A device ended the run (isa-debug-exit, ACPI S5): reported as an exit of the vCPU that
    // caused it, after the access completes.
    void raise_board_stop(VcpuExit exit);

    // What the loop does after an exit: run the vCPU again, end its time slice, or end the run.
    enum class Next : uint8_t { Resume, EndSlice };
    using Step = std::variant<Next, RunOutcome>;
    Step handle_exit(Vcpu&, VcpuExit&);
    // Runs one vCPU for a time slice of at most `slice` instructions; an outcome ends the run.
    std::optional<RunOutcome> run_slice(Vcpu&, uint64_t slice, uint64_t& instructions);

    MachineConfig m_config;
    Trace m_trace;
    FILE* m_trace_file { nullptr };
    FILE* m_serial_file { nullptr };
    int m_serial_input_fd { -1 }; // stdin for -serial stdio, until EOF
    int m_wake_fd { -1 };         // an eventfd post() signals, so a wait for serial input serves QMP
    std::unique_ptr<mmu::MemoryController> m_memory;
    std::vector<E820Entry> m_memory_map;
    std::unique_ptr<MachineClock> m_clock;
    devices::Bus m_pio;
    devices::Bus m_mmio;
    // The board's host side: the AMD-SP's BAR on an MMIO bus only the hypervisor reaches.
    devices::Bus m_host_mmio;
    devices::IrqLine m_psp_irq;
    std::unique_ptr<devices::AmdSp> m_amd_sp;

    IrqRouter m_irq_router;
    std::vector<std::unique_ptr<devices::BusDevice>> m_port_wrappers; // placed in front of a device's port
    std::vector<DeviceEntry> m_devices;
    // Typed views into m_devices.
    devices::Pic8259Pair* m_pic { nullptr };
    devices::Pit8254* m_pit { nullptr };
    devices::CmosRtc* m_rtc { nullptr };
    devices::AcpiPm* m_acpi_pm { nullptr };
    devices::Uart16550* m_uart { nullptr };
    devices::PostPort* m_post { nullptr };
    devices::IoApic* m_ioapic { nullptr };
    devices::I8042* m_i8042 { nullptr };
    devices::PciHost* m_pci_host { nullptr };
    std::vector<devices::LocalApic*> m_lapics; // one per vCPU, in vCPU order
    devices::ApicRouter m_apic_router;
    std::unique_ptr<devices::IrqSink> m_ioapic_lines; // ISA IRQ n -> GSI (IRQ 0 -> GSI 2)
    std::vector<std::unique_ptr<MachineIo>> m_ios;    // one per vCPU
    bool m_reset_requested { false };
    std::vector<uint64_t> m_ran; // instructions each vCPU ran in the current round
    std::vector<Vcpu> m_vcpus;
    std::optional<MultibootBoot> m_boot;
    std::optional<LinuxBoot> m_linux_boot;
    std::vector<GuestRange> m_boot_ranges;

    std::optional<VcpuExit> m_board_stop; // isa-debug-exit or power-off, not yet handled

    void run_requests();
    std::unique_ptr<SevRuntime> m_sev;

    std::mutex m_requests_mutex;
    std::condition_variable m_requests_cv;
    std::vector<std::function<void(Machine&)>> m_requests;
    bool m_finished { false };  // under m_requests_mutex
    bool m_paused { false };
    bool m_started { false };
    bool m_quit { false };
    bool m_incoming { false };
    bool m_restored { false };
    std::optional<uint64_t> m_break_icount; // replay-break
    bool m_in_slice { false };
    bool m_reset_shutdown { false };
    std::optional<RunOutcome> m_guest_ended;
    std::function<void(Event)> m_event_sink;
};

// The one `-kernel` entry for every boot protocol, shared by the Machine, the SEV launch and the
// launch-digest computation. It picks the protocol in QEMU's order (hw/i386/x86.c
// x86_load_linux, then hw/i386/multiboot.c): "HdrS" at 0x202 → a Linux bzImage; else a
// Multiboot v1 header in the first 8 KiB → Multiboot; else an ELF64 with a PVH note → Linux
// PVH; else a one-line refusal naming the formats sevemu accepts.
//
// Inputs: `memory_map` is the PC map a Multiboot kernel is told (pc_memory_map); a Linux
// kernel is told its own E820 map instead (linux_boot.h), built from the controller's DRAM.
// `initrd` is Multiboot's comma-separated module list, or one file for Linux. `cpu_count`
// (-smp) sizes the Linux MADT.
struct LoadedKernel {
    enum class Protocol : uint8_t { Multiboot, LinuxBzImage, LinuxPvh };
    struct Multiboot {
        MultibootImage image;
        MultibootBoot boot;
        size_t modules;
    };
    Protocol protocol { Protocol::Multiboot };
    std::vector<GuestRange> ranges;    // what the loader wrote (boot.h), ascending: what SEV measures
    BootEntryState entry;              // the vCPU at the kernel's entry point
    std::vector<E820Entry> memory_map; // the memory map the guest is told
    std::variant<Multiboot, LinuxBoot> details;

    Multiboot const* multiboot() const { return std::get_if<Multiboot>(&details); }
    LinuxBoot const* linux_boot() const { return std::get_if<LinuxBoot>(&details); }
};
std::string_view kernel_protocol_name(LoadedKernel::Protocol); // "multiboot", "linux-bzimage", "linux-pvh"
// `sev_c_bit` is set for an SEV guest: a Linux ELF vmlinux is then entered at startup_64 with
// identity tables carrying that C-bit, not through PVH (LinuxLoadParams::sev_c_bit).
Result<LoadedKernel, MachineError> load_kernel_image(mmu::MemoryController&, std::vector<E820Entry> const& memory_map,
    std::string const& kernel, std::string const& initrd, std::string const& append, unsigned cpu_count = 1,
    std::optional<unsigned> sev_c_bit = std::nullopt);

// The PC memory map of a machine with this DRAM layout (what INT 15h E820 would report):
// conventional memory up to the EBDA, the BIOS area reserved, RAM from 1 MiB, RAM above 4 GiB.
std::vector<E820Entry> pc_memory_map(mmu::MemoryController const&);

} // namespace sevemu::emulator
