#include "emulator/machine.h"

#include "base/file_io.h"
#include "base/overloaded.h"
#include "cpu/cpu.h"
#include "devices/acpi_pm.h"
#include "devices/amd_sp.h"
#include "devices/apic_bus.h"
#include "devices/cmos_rtc.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/ioapic.h"
#include "devices/lapic.h"
#include "devices/pci_host.h"
#include "devices/pc_ports.h"
#include "devices/pic8259.h"
#include "devices/pit8254.h"
#include "devices/uart16550.h"
#include "emulator/clock.h"
#include "emulator/machine_io.h"
#include "emulator/sev_runtime.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <iterator>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace sevemu::emulator {

namespace {

constexpr uint64_t kMinMemory = 2ull << 20;   // room for the low structures and a kernel at 1 MiB
constexpr uint64_t kMaxMemory = 1ull << 40;   // 1 TiB: the host mapping is lazy, but be sane
constexpr uint64_t kRunSlice = 1'000'000;     // instructions per Cpu::run() call

Unexpected<MachineError> fail(std::string msg) { return Unexpected<MachineError>(MachineError { std::move(msg) }); }

// `option` names the command-line option the file came from ("-kernel", "-initrd"), so the
// error reads as the user typed it: "-kernel /tmp: is a directory".
Result<std::vector<uint8_t>, MachineError> read_file(std::string const& path, std::string_view option, uint64_t limit)
{
    auto r = read_regular_file(path, limit);
    if (!r)
        return fail(fmt::format("{} {}", option, r.error().message));
    return std::move(*r);
}

// A port whose writes end the vCPU's time slice. The PIT's counters sit behind one: a guest
// that reprograms the timer gets its new deadline at once (the run loop sizes each slice to the
// next deadline), so where slices end depends only on what the guest did — which a snapshot
// taken at any instruction then reproduces exactly.
class SliceEndingPort final : public devices::BusDevice {
public:
    SliceEndingPort(devices::BusDevice& inner, std::function<void()> end_slice)
        : m_inner(inner)
        , m_end_slice(std::move(end_slice))
    {
    }
    std::string_view name() const override { return m_inner.name(); }
    uint64_t read(uint64_t offset, unsigned size) override { return m_inner.read(offset, size); }
    void write(uint64_t offset, unsigned size, uint64_t value) override
    {
        m_inner.write(offset, size, value);
        m_end_slice();
    }

private:
    devices::BusDevice& m_inner;
    std::function<void()> m_end_slice;
};

// The IOAPIC's view of the ISA IRQ lines: ISA IRQ n is GSI n, except the PIT's IRQ 0, which is
// wired to pin 2 (the MADT's interrupt source override IRQ0 -> GSI 2, as on QEMU's PC).
class IsaToGsi final : public devices::IrqSink {
public:
    explicit IsaToGsi(devices::IoApic& ioapic) : m_ioapic(ioapic) {}
    void set_irq(unsigned line, bool level) override { m_ioapic.set_irq(line == 0 ? 2 : line, level); }

private:
    devices::IoApic& m_ioapic;
};

std::string size_text(uint64_t bytes)
{
    if (bytes % (1ull << 30) == 0)
        return fmt::format("{} GiB", bytes >> 30);
    return fmt::format("{} MiB", bytes >> 20);
}

} // namespace

std::vector<E820Entry> pc_memory_map(mmu::MemoryController const& mc)
{
    // The map QEMU's PC machine reports through SeaBIOS (observed with QEMU 7.2, Debian 12):
    // 639 KiB of conventional memory, the 1 KiB EBDA and the BIOS at 0xF0000 reserved, RAM from
    // 1 MiB up to the top of low memory less the 128 KiB SeaBIOS keeps for its tables, the
    // flash at 0xFFFC0000, RAM above 4 GiB, and (AMD CPUs) the HyperTransport window at
    // 0xFD_0000_0000-0xFF_FFFF_FFFF that QEMU reserves.
    constexpr uint64_t kSeaBiosHighTable = 0x20000;
    std::vector<E820Entry> map;
    for (auto const& r : mc.ranges()) {
        uint64_t base = r.base.value, end = r.base.value + r.size;
        if (base == 0) {
            map.push_back({ 0, std::min<uint64_t>(end, 0x9FC00), E820Entry::kUsable });
            map.push_back({ 0x9FC00, 0x400, E820Entry::kReserved });
            map.push_back({ 0xF0000, 0x10000, E820Entry::kReserved });
            if (end > 0x100000 + kSeaBiosHighTable) {
                map.push_back({ 0x100000, end - kSeaBiosHighTable - 0x100000, E820Entry::kUsable });
                map.push_back({ end - kSeaBiosHighTable, kSeaBiosHighTable, E820Entry::kReserved });
            }
        } else {
            map.push_back({ base, end - base, E820Entry::kUsable });
        }
    }
    map.push_back({ 0xFFFC0000, 0x40000, E820Entry::kReserved });
    map.push_back({ 0xFD'0000'0000ull, 0x3'0000'0000ull, E820Entry::kReserved });
    std::sort(map.begin(), map.end(), [](auto const& a, auto const& b) { return a.base < b.base; });
    return map;
}

Machine::Machine(MachineConfig config)
    : m_config(std::move(config))
{
}

Machine::~Machine()
{
    flush_serial();
    // The SEV guest's VM is torn down through the PSP (DEACTIVATE, DECOMMISSION) while the
    // AMD-SP, the buses and memory still stand; the CPUs hold references into the devices and
    // memory.
    m_sev.reset();
    m_vcpus.clear();
    m_amd_sp.reset();
    if (m_serial_file && m_serial_file != stdout)
        std::fclose(m_serial_file);
    if (m_trace_file)
        std::fclose(m_trace_file);
    if (m_wake_fd >= 0)
        ::close(m_wake_fd);
}

Result<std::unique_ptr<Machine>, MachineError> Machine::create(MachineConfig config)
{
    std::unique_ptr<Machine> m(new Machine(std::move(config)));
    TRY(m->build());
    TRY(m->load_kernel());
    return m;
}

Result<std::unique_ptr<Machine>, MachineError> Machine::create_incoming(MachineConfig config)
{
    std::unique_ptr<Machine> m(new Machine(std::move(config)));
    m->m_incoming = true;
    TRY(m->build());
    if (m->m_config.confidential_guest) {
        // The target of an SEV migration: the host and an SEV VM without a launch; the guest
        // comes with RECEIVE_START / RECEIVE_UPDATE_DATA / RECEIVE_FINISH from the stream
        // (emulator/sev_migration.cpp).
        auto* sp = TRY(m->amd_sp());
        m->m_sev = TRY(SevRuntime::create_incoming(m->m_config, *m->m_memory, *sp, m->m_host_mmio, m->m_trace));
        for (auto& v : m->m_vcpus) {
            v.attach_sev(&m->m_sev->vcpu(v.index()));
            v.sev()->set_apic_base(m->m_lapics[v.index()]->apic_base_msr());
        }
    }
    return m;
}

Result<void, MachineError> Machine::add_device(std::unique_ptr<devices::Device> device,
    std::initializer_list<DevicePlacement> placements)
{
    for (auto const& p : placements) {
        auto& bus = p.space == DevicePlacement::Space::Pio ? m_pio : m_mmio;
        if (!bus.add(p.base, p.length, *p.port))
            return fail(fmt::format("internal: {} at {:#x}-{:#x} overlaps another device", device->name(), p.base,
                p.base + p.length - 1));
    }
    m_devices.push_back({ std::move(device), std::vector<DevicePlacement>(placements) });
    return {};
}

Result<devices::AmdSp*, MachineError> Machine::amd_sp()
{
    if (m_amd_sp)
        return m_amd_sp.get();
    if (m_config.platform_dir.empty())
        return fail("no platform directory for the AMD-SP (use --platform DIR or $SEVEMU_PLATFORM)");
    auto sp = devices::AmdSp::create(*m_memory, m_host_mmio, m_psp_irq, m_config.platform_dir, m_config.cpu_model, m_trace);
    if (!sp) {
        if (sp.error().kind == devices::AmdSpError::Kind::Store)
            return fail(fmt::format("--platform {}: {}", m_config.platform_dir, sp.error().message));
        return fail("internal: " + sp.error().message);
    }
    m_amd_sp = std::move(*sp);
    return m_amd_sp.get();
}

Result<void, MachineError> Machine::build()
{
    auto const& c = m_config;
    // --- Validate the typed configuration (the CLI has already named bad syntax).
    if (c.smp == 0 || c.smp > kMaxVcpus)
        return fail(fmt::format("-smp {}: unsupported: 1 to {} vCPUs", c.smp, kMaxVcpus));
    if (c.memory_size < kMinMemory)
        return fail(fmt::format("-m {}: too little memory (at least 2 MiB)", size_text(c.memory_size)));
    if (c.memory_size > kMaxMemory)
        return fail(fmt::format("-m {}: too much memory (at most 1 TiB)", size_text(c.memory_size)));
    if (c.memory_size % kPageSize)
        return fail("memory size must be a multiple of 4 KiB");
    if (c.confidential_guest)
        TRY(SevRuntime::check_config(c));

    // --- Trace (-trace, -D).
    if (!c.trace_file.empty()) {
        m_trace_file = std::fopen(c.trace_file.c_str(), "w");
        if (!m_trace_file)
            return fail(fmt::format("-D {}: cannot open: {}", c.trace_file, std::strerror(errno)));
        m_trace.set_output(m_trace_file);
    }
    for (auto const& p : c.trace_patterns)
        m_trace.enable(p);

    // --- DRAM behind the memory controller.
    // An SEV machine's DRAM also holds the hypervisor's pages, below guest RAM (sev_runtime.h).
    mmu::MemoryConfig mem;
    mem.dram_size = c.confidential_guest ? SevRuntime::dram_size(c.memory_size) : c.memory_size;
    mem.key_slots = cpu_model_info(c.cpu_model).num_encrypted_guests + 1; // slot 0 = host
    // The plaintext cache never needs more frames than there are DRAM pages.
    mem.cache_pages = uint32_t(std::min<uint64_t>(mem.cache_pages, c.memory_size / kPageSize));
    auto mc = mmu::MemoryController::create(mem);
    if (!mc)
        return fail(fmt::format("cannot create {} of guest RAM: {}", size_text(c.memory_size), mmu::mem_error_name(mc.error())));
    m_memory = std::move(*mc);
    if (!c.confidential_guest)
        m_memory_map = pc_memory_map(*m_memory); // an SEV guest's comes with its launch

    // --- Serial (COM1).
    switch (c.serial.kind) {
    case SerialConfig::Kind::Stdio:
        m_serial_file = stdout;
        m_serial_input_fd = STDIN_FILENO;
        m_wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        break;
    case SerialConfig::Kind::File:
        m_serial_file = std::fopen(c.serial.path.c_str(), "wb");
        if (!m_serial_file)
            return fail(fmt::format("-serial file:{}: cannot open: {}", c.serial.path, std::strerror(errno)));
        break;
    default:
        break;
    }

    // --- The clock: the running vCPU's retired instructions on top of the round's start
    // (emulator/clock.h has the rule for N vCPUs), plus the time skipped while all halted.
    m_clock = std::make_unique<MachineClock>([this] {
        uint64_t n = 0;
        for (auto const& v : m_vcpus)
            n += v.instructions();
        return n;
    });

    // --- The devices, in the order of the device list (reset, snapshot sections). Interrupt
    // lines are the router's ISA IRQ lines, as on a PC; the 8259 pair hears them all.
    using Space = DevicePlacement::Space;
    auto pic = std::make_unique<devices::Pic8259Pair>();
    m_pic = pic.get();
    m_irq_router.connect(*m_pic);
    TRY(add_device(std::move(pic), { { Space::Pio, devices::Pic8259Pair::kMasterBase, 2, &m_pic->master() },
        { Space::Pio, devices::Pic8259Pair::kSlaveBase, 2, &m_pic->slave() },
        { Space::Pio, devices::Pic8259Pair::kElcrBase, 2, &m_pic->elcr() } }));

    auto pit = std::make_unique<devices::Pit8254>(m_irq_router.isa_line(0), [this] { return now_ns(); });
    m_pit = pit.get();
    m_port_wrappers.push_back(std::make_unique<SliceEndingPort>(m_pit->counters(), [this] { stop_vcpus(); }));
    TRY(add_device(std::move(pit), { { Space::Pio, devices::Pit8254::kBase, 4, m_port_wrappers.back().get() },
        { Space::Pio, devices::Pit8254::kPortB, 1, &m_pit->port_b() } }));

    int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::system_clock::now().time_since_epoch()).count();
    auto rtc = std::make_unique<devices::CmosRtc>([this] { return now_ns(); }, wall);
    m_rtc = rtc.get();
    uint64_t below_4g = 0, above_4g = 0;
    if (c.confidential_guest)
        below_4g = c.memory_size; // guest RAM only (at most 2 GiB: below the PCI hole)
    else
        for (auto const& r : m_memory->ranges())
            (r.base.value < 0x1'0000'0000ull ? below_4g : above_4g) += r.size;
    m_rtc->set_memory_size(below_4g, above_4g, c.smp);
    TRY(add_device(std::move(rtc), { { Space::Pio, devices::CmosRtc::kBase, 2, m_rtc } }));

    // ACPI PM block (power-off, PM timer) where SeaBIOS puts it on QEMU.
    auto acpi = std::make_unique<devices::AcpiPm>([this] { return now_ns(); }, [this] { request_power_off(); });
    m_acpi_pm = acpi.get();
    m_acpi_pm->connect_sci(&m_irq_router.isa_line(9)); // FADT SCI_INT = 9, as QEMU's PC
    TRY(add_device(std::move(acpi), { { Space::Pio, devices::AcpiPm::kBase, devices::AcpiPm::kLength, m_acpi_pm } }));

    auto uart = std::make_unique<devices::Uart16550>(m_irq_router.isa_line(devices::Uart16550::kCom1Irq),
        [this](uint8_t b) { serial_out(b); });
    m_uart = uart.get();
    TRY(add_device(std::move(uart), { { Space::Pio, devices::Uart16550::kCom1Base, devices::Uart16550::kRegisterCount, m_uart } }));

    auto post = std::make_unique<devices::PostPort>();
    m_post = post.get();
    TRY(add_device(std::move(post), { { Space::Pio, devices::PostPort::kPort, 1, m_post } }));

    // The IOAPIC beside the 8259 pair: it hears every ISA line (IRQ 0 on pin 2).
    auto ioapic = std::make_unique<devices::IoApic>();
    m_ioapic = ioapic.get();
    m_ioapic->connect_bus(&m_apic_router);
    m_apic_router.attach(static_cast<devices::EoiListener&>(*m_ioapic));
    m_ioapic_lines = std::make_unique<IsaToGsi>(*m_ioapic);
    m_irq_router.connect(*m_ioapic_lines);
    TRY(add_device(std::move(ioapic), { { Space::Mmio, devices::IoApic::kDefaultBase, devices::IoApic::kMmioLength, m_ioapic } }));

    // The keyboard controller, for its reset line (command 0xFE) and A20 (QEMU hw/input/pckbd.c).
    auto kbc = std::make_unique<devices::I8042>(m_irq_router.isa_line(1), m_irq_router.isa_line(12), [this] { request_reset(); });
    m_i8042 = kbc.get();
    TRY(add_device(std::move(kbc), { { Space::Pio, devices::I8042::kDataPort, 1, &m_i8042->data_port() },
        { Space::Pio, devices::I8042::kCommandPort, 1, &m_i8042->command_port() } }));

    // The PCI host bridge (configuration mechanism #1; 0xCF9 is its reset control register).
    auto pci = std::make_unique<devices::PciHost>([this] { request_reset(); });
    m_pci_host = pci.get();
    TRY(add_device(std::move(pci), { { Space::Pio, devices::PciHost::kAddressPort, devices::PciHost::kPortLength, &m_pci_host->address_port() },
        { Space::Pio, devices::PciHost::kDataPort, devices::PciHost::kPortLength, &m_pci_host->data_port() } }));

    // One local APIC per vCPU, APIC ID = vCPU index (CPUID and the MADT say the same). Each is
    // its vCPU's interrupt controller; the 8259 pair reaches it through LVT0 ExtINT.
    for (uint32_t i = 0; i < c.smp; ++i) {
        devices::LocalApic::Config lc;
        lc.cpu_index = i;
        lc.apic_id = i;
        lc.bsp = i == 0;
        lc.x2apic_supported = true;
        lc.tsc_deadline_supported = true;
        lc.tsc_hz = 1'000'000'000; // the TSC counts the clock's nanoseconds (clock.h)
        auto lapic = std::make_unique<devices::LocalApic>(lc, [this] { return now_ns(); });
        auto* l = lapic.get();
        l->connect_bus(&m_apic_router);
        l->connect_pic(m_pic);
        // An NMI ends its vCPU's slice, so that the machine hands it over at once (apply_apic_events).
        l->connect_nmi_notify([this, i] {
            if (i < m_vcpus.size())
                m_vcpus[i].cpu().request_stop();
        });
        m_apic_router.attach(*l);
        m_lapics.push_back(l);
        TRY(add_device(std::move(lapic), {}));
    }

    if (c.debug_exit) {
        auto const& d = *c.debug_exit;
        if (d.iosize == 0 || d.iobase + d.iosize > 0x10000)
            return fail(fmt::format("isa-debug-exit: iobase={:#x},iosize={:#x} is not a valid port range", d.iobase, d.iosize));
        for (uint64_t p = d.iobase; p < d.iobase + d.iosize; ++p)
            if (auto hit = m_pio.find(p))
                return fail(fmt::format("isa-debug-exit: ports {:#x}-{:#x} overlap {}", d.iobase, d.iobase + d.iosize - 1,
                    hit->device->name()));
        auto dev = std::make_unique<devices::DebugExit>([this](int status) { raise_board_stop(ExitDebugExit { status }); });
        auto* port = dev.get();
        TRY(add_device(std::move(dev), { { Space::Pio, d.iobase, d.iosize, port } }));
    }

    // --- The vCPUs, wired to the buses and the interrupt controller.
    for (uint32_t i = 0; i < c.smp; ++i) {
        m_ios.push_back(std::make_unique<MachineIo>(m_pio, m_mmio, *m_lapics[i], m_trace));
        auto cpu = std::make_unique<cpu::Cpu>(*m_memory, c.cpu_model, *m_ios.back());
        cpu->set_topology(i, c.smp);
        cpu->set_apic_caps(true, true); // devices/lapic.h implements both in full
        cpu->reset();
        auto* core = cpu.get();
        m_ios.back()->set_end_slice([core] { core->request_stop(); });
        if (i > 0)
            cpu->share_code_with(m_vcpus.front().cpu()); // cross-modifying code between vCPUs
        m_vcpus.emplace_back(i, std::move(cpu));
    }
    return {};
}

std::string_view kernel_protocol_name(LoadedKernel::Protocol p)
{
    switch (p) {
    case LoadedKernel::Protocol::Multiboot:
        return "multiboot";
    case LoadedKernel::Protocol::LinuxBzImage:
        return "linux-bzimage";
    case LoadedKernel::Protocol::LinuxPvh:
        return "linux-pvh";
    }
    return "unknown";
}

namespace {

// The Linux loaders' inputs from the controller's DRAM: its size, and where low RAM ends when
// part of it was moved above 4 GiB (the memory controller's PC layout, MemoryConfig::low_mem_top).
LinuxLoadParams linux_params(mmu::MemoryController const& mc, std::string const& append, unsigned cpu_count,
    std::optional<unsigned> sev_c_bit)
{
    LinuxLoadParams p;
    p.sev_c_bit = sev_c_bit;
    p.cmdline = append;
    p.low_mem_top = mmu::MemoryConfig {}.low_mem_top;
    bool high = false;
    uint64_t low_end = 0;
    for (auto const& r : mc.ranges()) {
        p.ram_size += r.size;
        if (r.base.value == 0)
            low_end = r.size;
        else
            high = true;
    }
    if (high)
        p.low_mem_top = low_end;
    p.acpi.cpu_count = cpu_count;
    p.acpi.ioapic = true;
    return p;
}

Result<LoadedKernel, MachineError> load_linux_image(mmu::MemoryController& mc, std::string const& kernel,
    std::span<uint8_t const> file, std::string const& initrd, std::string const& append, unsigned cpu_count,
    std::optional<unsigned> sev_c_bit)
{
    auto params = linux_params(mc, append, cpu_count, sev_c_bit);
    // One initrd file (QEMU's x86_load_linux); a comma is part of its name.
    std::vector<uint8_t> initrd_bytes;
    if (!initrd.empty()) {
        uint64_t limit = std::min(file_limits::kModule, params.ram_size);
        auto data = read_regular_file(initrd, limit);
        if (!data && data.error().kind == FileError::Kind::TooLarge && limit < file_limits::kModule)
            return fail(fmt::format("-initrd {}: larger than guest RAM ({} bytes; see -m)", initrd, limit));
        if (!data)
            return fail(fmt::format("-initrd {}", data.error().message));
        initrd_bytes = std::move(*data);
    }
    params.initrd = initrd_bytes;
    auto boot = load_linux(mc, file, params);
    if (!boot)
        return fail(fmt::format("-kernel {}: {}", kernel, boot.error().message));
    LoadedKernel out;
    out.protocol = boot->protocol == LinuxBoot::Protocol::BzImage ? LoadedKernel::Protocol::LinuxBzImage
                                                                   : LoadedKernel::Protocol::LinuxPvh;
    out.ranges = boot->written;
    out.entry = boot->entry;
    out.memory_map = boot->e820;
    out.details = std::move(*boot);
    return out;
}

} // namespace

Result<LoadedKernel, MachineError> load_kernel_image(mmu::MemoryController& mc, std::vector<E820Entry> const& memory_map,
    std::string const& kernel, std::string const& initrd, std::string const& append, unsigned cpu_count,
    std::optional<unsigned> sev_c_bit)
{
    if (kernel.empty())
        return fail("no -kernel given: nothing to run");
    auto file = TRY(read_file(kernel, "-kernel", file_limits::kKernel));
    // QEMU's order (hw/i386/x86.c x86_load_linux): the Linux boot protocol's "HdrS" first, then
    // a Multiboot header, then an ELF with a PVH note.
    auto kind = identify_kernel(file);
    if (kind == KernelKind::LinuxBzImage)
        return load_linux_image(mc, kernel, file, initrd, append, cpu_count, sev_c_bit);
    if (kind == KernelKind::Unknown) {
        if (file.empty())
            return fail(fmt::format("-kernel {}: kernel file is empty", kernel));
        if (file.size() >= 4 && std::memcmp(file.data(), "\x7F" "ELF", 4) == 0) {
            // An ELF without a Multiboot header: PVH or nothing; say which formats would do.
            if (auto pvh = parse_pvh_elf(file); !pvh)
                return fail(fmt::format("-kernel {}: {} (sevemu boots a Linux bzImage, a Multiboot v1 image or an ELF64 "
                                        "vmlinux with a PVH note)", kernel, pvh.error().message));
            return load_linux_image(mc, kernel, file, initrd, append, cpu_count, sev_c_bit);
        }
        return fail(fmt::format("-kernel {}: not a kernel sevemu boots: expected a Linux bzImage (\"HdrS\" at 0x202), a "
                                "Multiboot v1 image (magic 0x1BADB002 in the first 8 KiB) or an ELF64 vmlinux with a PVH note",
            kernel));
    }
    auto image = parse_multiboot(file);
    if (!image)
        return fail(fmt::format("-kernel {}: {}", kernel, image.error().message));

    MultibootLoadParams params;
    params.kernel_name = kernel;
    params.append = append;
    params.initrd_option = initrd;
    params.memory_map = memory_map;
    // Modules are copied into guest RAM, so together they cannot exceed it: reading is bounded
    // by what is left, and a list of huge modules never fills host memory first.
    uint64_t ram_left = 0;
    for (auto const& e : memory_map)
        if (e.type == E820Entry::kUsable)
            ram_left += e.length;
    ram_left -= std::min(ram_left, uint64_t(file.size()));
    for (auto const& spec : parse_module_list(initrd)) {
        if (spec.path.empty())
            return fail(fmt::format("-initrd {}: empty module name", initrd));
        uint64_t limit = std::min(file_limits::kModule, ram_left);
        auto data = read_regular_file(spec.path, limit);
        if (!data && data.error().kind == FileError::Kind::TooLarge && limit < file_limits::kModule)
            return fail(fmt::format("-initrd {}: larger than the guest RAM left for modules ({} bytes; see -m)", spec.path, limit));
        if (!data)
            return fail(fmt::format("-initrd {}", data.error().message));
        ram_left -= data->size();
        params.modules.push_back({ spec.cmdline, std::move(*data) });
    }
    auto boot = load_multiboot(mc, *image, file, params);
    if (!boot)
        return fail(fmt::format("-kernel {}: {}", kernel, boot.error().message));
    LoadedKernel out;
    out.protocol = LoadedKernel::Protocol::Multiboot;
    out.ranges = multiboot_written_ranges(*boot);
    out.entry = multiboot_entry_state(*boot);
    out.memory_map = memory_map;
    out.details = LoadedKernel::Multiboot { *image, *boot, params.modules.size() };
    return out;
}

Result<void, MachineError> Machine::load_kernel()
{
    auto const& c = m_config;
    if (c.confidential_guest) {
        // SEV: the hypervisor loads, encrypts and measures the kernel in guest RAM and puts the
        // vCPU in the loader's entry state (SevRuntime::create); the core is the host's. The
        // user's files are read before the AMD-SP opens the platform directory.
        auto inputs = TRY(SevRuntime::read_launch_inputs(c));
        auto* sp = TRY(amd_sp());
        m_sev = TRY(SevRuntime::create(c, std::move(inputs), *m_memory, *sp, m_host_mmio, m_trace));
        if (m_sev->linux_boot())
            apply_firmware_mtrrs_to_vcpus(); // the core's MTRRs are the SEV guest's (vmm/vcpu.cpp)
        // Each hypervisor vCPU on its own core; its IA32_APIC_BASE starts as its LAPIC's
        // (QEMU's KVM_SET_SREGS apic_base from the userspace APIC).
        for (auto& v : m_vcpus) {
            v.attach_sev(&m_sev->vcpu(v.index()));
            v.sev()->set_apic_base(m_lapics[v.index()]->apic_base_msr());
        }
        m_boot = m_sev->boot();
        m_linux_boot = m_sev->linux_boot();
        m_boot_ranges = m_sev->measured_ranges();
        m_memory_map = m_sev->memory_map();
        if (m_trace.enabled("multiboot") && m_boot)
            m_trace.emit("multiboot", fmt::format("SEV guest: image {:#x}-{:#x} entry {:#x} info {:#x}, measured {} range(s)",
                m_boot->load_low, m_boot->load_high, m_boot->entry, m_boot->info_addr, m_sev->measured_ranges().size()));
        if (m_trace.enabled("linux") && m_linux_boot)
            m_trace.emit("linux", fmt::format("SEV guest: kernel {:#x}-{:#x} entry {:#x} boot info {:#x}, measured {} range(s)",
                m_linux_boot->kernel_low, m_linux_boot->kernel_high, m_linux_boot->entry.rip, m_linux_boot->boot_info,
                m_sev->measured_ranges().size()));
        return {};
    }
    // A Multiboot kernel is told the PC map; a Linux kernel brings its own E820 map.
    m_memory_map = pc_memory_map(*m_memory);
    auto loaded = TRY(load_kernel_image(*m_memory, m_memory_map, c.kernel, c.initrd, c.append, c.smp));
    m_memory_map = loaded.memory_map;
    m_boot.reset();
    m_linux_boot.reset();
    m_boot_ranges = loaded.ranges;
    if (auto const* mb = loaded.multiboot()) {
        auto const* image = &mb->image;
        auto const* boot = &mb->boot;
        m_boot = *boot;
        if (m_trace.enabled("multiboot"))
            m_trace.emit("multiboot", fmt::format("{} image {:#x}-{:#x} entry {:#x} info {:#x} mem_lower {} KiB mem_upper {} KiB, {} module(s)",
                image->format == MultibootImage::Format::AoutKludge ? "a.out-kludge" : "ELF32", boot->load_low,
                boot->load_high, boot->entry, boot->info_addr, boot->mem_lower_kib, boot->mem_upper_kib, mb->modules));
    } else if (auto const* lb = loaded.linux_boot()) {
        m_linux_boot = *lb;
        if (m_trace.enabled("linux"))
            m_trace.emit("linux", fmt::format("{} kernel {:#x}-{:#x} entry {:#x} boot info {:#x} initrd {:#x}+{:#x} ACPI {:#x}",
                kernel_protocol_name(loaded.protocol), lb->kernel_low, lb->kernel_high, lb->entry.rip, lb->boot_info,
                lb->initrd_addr, lb->initrd_size, lb->acpi_base));
    }

    // The boot processor at the loader's entry state; the others wait for their SIPI. A Linux
    // kernel also finds the MTRRs as firmware leaves them, on every vCPU (boot.h).
    auto& cpu = m_vcpus.front().cpu();
    cpu.reset();
    auto st = cpu.state();
    apply_boot_entry(loaded.entry, st);
    cpu.set_state(st);
    if (loaded.linux_boot())
        apply_firmware_mtrrs_to_vcpus();
    return {};
}

void Machine::apply_firmware_mtrrs_to_vcpus()
{
    for (auto& v : m_vcpus) {
        auto st = v.cpu().state();
        apply_firmware_mtrrs(st, cpu_model_info(m_config.cpu_model).phys_addr_bits);
        v.cpu().set_state(st);
    }
}

void Machine::serial_out(uint8_t byte)
{
    if (m_config.serial.kind == SerialConfig::Kind::Callback) {
        if (m_config.serial.callback)
            m_config.serial.callback(byte);
        return;
    }
    if (!m_serial_file)
        return;
    std::fputc(byte, m_serial_file);
    if (byte == '\n')
        std::fflush(m_serial_file);
}

void Machine::flush_serial()
{
    if (m_serial_file)
        std::fflush(m_serial_file);
}

bool Machine::poll_serial_input(int wait_ms)
{
    if (m_serial_input_fd < 0)
        return false;
    pollfd p { m_serial_input_fd, POLLIN, 0 };
    if (::poll(&p, 1, wait_ms) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
        return false;
    uint8_t buf[256];
    ssize_t n = ::read(m_serial_input_fd, buf, sizeof buf);
    if (n <= 0) {
        m_serial_input_fd = -1; // EOF (or an error): no more input, as a closed chardev
        return false;
    }
    m_uart->push_input(std::span<uint8_t const>(buf, size_t(n)));
    return true;
}

void Machine::request_power_off() { raise_board_stop(ExitPowerOff {}); }

void Machine::request_reset()
{
    m_reset_requested = true;
    stop_vcpus();
}

void Machine::inject_nmi()
{
    for (auto* l : m_lapics) {
        l->set_lint(1, true); // an edge on LINT1 (QEMU's apic_local_deliver(s, APIC_LVT_LINT1))
        l->set_lint(1, false);
    }
}

void Machine::raise_board_stop(VcpuExit exit)
{
    // The first isa-debug-exit write wins; it also wins over a power-off (QEMU exits at once).
    if (m_board_stop && std::holds_alternative<ExitDebugExit>(*m_board_stop))
        return;
    m_board_stop = std::move(exit);
    stop_vcpus();
}

void Machine::stop_vcpus()
{
    for (auto& v : m_vcpus)
        v.cpu().request_stop();
}

int64_t Machine::now_ns() const { return m_clock ? m_clock->now_ns() : 0; }

bool Machine::post(std::function<void(Machine&)> request, bool interrupt)
{
    {
        std::lock_guard lock(m_requests_mutex);
        if (m_finished)
            return false;
        m_requests.push_back(std::move(request));
    }
    m_requests_cv.notify_all();
    // A running CPU finishes its slice early so the request is served promptly (unless the
    // request is background work); a machine waiting for serial input in HLT wakes up.
    if (interrupt)
        stop_vcpus();
    if (m_wake_fd >= 0) {
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(m_wake_fd, &one, sizeof one);
    }
    return true;
}

void Machine::run_requests()
{
    std::vector<std::function<void(Machine&)>> batch;
    {
        std::lock_guard lock(m_requests_mutex);
        batch.swap(m_requests);
    }
    for (auto& r : batch)
        r(*this);
}

void Machine::advance_timers(int64_t now)
{
    m_pit->advance(now);
    m_acpi_pm->advance(now);
    for (auto* l : m_lapics)
        l->advance(now);
}

std::optional<int64_t> Machine::next_timer_deadline(int64_t now) const
{
    auto earliest = m_pit->next_irq_deadline(now);
    auto consider = [&](std::optional<int64_t> d) {
        if (d && (!earliest || *d < *earliest))
            earliest = d;
    };
    consider(m_acpi_pm->next_deadline());
    for (auto const* l : m_lapics)
        consider(l->next_deadline());
    return earliest;
}

void Machine::skip_time(int64_t ns)
{
    if (ns <= 0)
        return;
    m_clock->skip(ns);
    for (auto& v : m_vcpus)
        v.cpu().set_tsc(v.cpu().tsc() + uint64_t(ns));
}

void Machine::apply_apic_events(size_t i)
{
    auto& lapic = *m_lapics[i];
    if (m_vcpus[i].sev()) {
        // An SEV vCPU (plain SEV, not ES): the hypervisor resets and starts its VMCB as KVM does
        // (vmm::Vcpu::init_event, deliver_sipi); the core under it stays the host's.
        if (lapic.take_init())
            m_vcpus[i].sev_init();
        if (auto vector = lapic.take_sipi())
            m_vcpus[i].sev_sipi(*vector);
        return;
    }
    auto& cpu = m_vcpus[i].cpu();
    if (lapic.take_init()) {
        // INIT (APM vol 2 §14.1.3; SDM vol 3 Table 9-1): the processor state of RESET, except
        // that the MSRs, x87/SSE state and the TSC keep their values. The LAPIC kept its base
        // and ID; an AP now waits for a SIPI, the BSP restarts at the reset vector.
        auto before = cpu.state();
        cpu.reset();
        auto s = cpu.state();
        s.msr = before.msr;
        s.msr.apic_base = lapic.apic_base_msr();
        s.xmm = before.xmm;
        s.mxcsr = before.mxcsr;
        s.x87 = before.x87;
        s.tsc = before.tsc;
        s.instructions = before.instructions;
        cpu.set_state(s);
    }
    if (auto vector = lapic.take_sipi()) {
        // Start-up IPI (SDM vol 3 §9.4.4; APM vol 2 §16.5): real mode at CS = VV00, IP = 0.
        auto s = cpu.state();
        s.seg[cpu::CS].selector = uint16_t(*vector << 8);
        s.seg[cpu::CS].base = uint64_t(*vector) << 12;
        s.rip = 0;
        s.halted = false;
        cpu.set_state(s);
    }
    // NMI (an NMI message or LINT1): to the vCPU's NMI input, which holds it while an NMI
    // handler runs (until IRET).
    if (lapic.take_nmi())
        m_vcpus[i].inject_nmi();
}

bool Machine::runnable(size_t i)
{
    apply_apic_events(i);
    auto& lapic = *m_lapics[i];
    if (lapic.waiting_for_sipi())
        return false;
    Vcpu& v = m_vcpus[i];
    // An SEV-ES AP in AP reset hold runs again only when a SIPI releases it (KVM's
    // KVM_MP_STATE_AP_RESET_HOLD; apply_apic_events above delivers the SIPI).
    if (v.sev() && v.sev()->in_ap_reset_hold())
        return false;
    if (!v.halted())
        return true;
    return v.nmi_deliverable() || (v.guest_interrupts_enabled() && lapic.interrupt_pending());
}

// No vCPU can run: every one is halted (or waits for a SIPI). Skip virtual time to the next
// timer event, or wait for serial input (QEMU would wait too) — and for QMP requests meanwhile.
Machine::Wake Machine::sleep_until_interrupt()
{
    auto any_runnable = [&] {
        for (size_t i = 0; i < m_vcpus.size(); ++i)
            if (runnable(i))
                return true;
        return false;
    };
    // Only a halted vCPU with RFLAGS.IF can be woken by a device (an IPI needs a running vCPU).
    bool can_ever_wake = false;
    for (size_t i = 0; i < m_vcpus.size(); ++i)
        if (!m_lapics[i]->waiting_for_sipi() && m_vcpus[i].guest_interrupts_enabled())
            can_ever_wake = true;
    if (!can_ever_wake)
        return Wake::Never;
    bool can_wake = any_runnable();
    // Timer events that wake nobody (a masked line) are passed over, up to a bound.
    for (int n = 0; !can_wake && n < 1000; ++n) {
        auto wake = next_timer_deadline(now_ns()); // the guest may have just programmed it
        if (!wake)
            break;
        skip_time(*wake - now_ns());
        advance_timers(now_ns());
        can_wake = any_runnable();
    }
    while (!can_wake && m_serial_input_fd >= 0) {
        flush_serial();
        pollfd p[2] = { { m_serial_input_fd, POLLIN, 0 }, { m_wake_fd, POLLIN, 0 } };
        if (::poll(p, m_wake_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
            break;
        if (m_wake_fd >= 0 && (p[1].revents & POLLIN)) {
            uint64_t count;
            [[maybe_unused]] auto n = ::read(m_wake_fd, &count, sizeof count);
            return Wake::Request;
        }
        poll_serial_input(0);
        can_wake = any_runnable();
    }
    return can_wake ? Wake::Interrupt : Wake::Never;
}

Result<void, MachineError> Machine::system_reset(ResetCause cause)
{
    if (m_sev)
        return fail("system_reset is unsupported for SEV guests: sevemu cannot relaunch an encrypted guest (QUIRKS.md)");
    if (m_config.no_reboot) { // QEMU: with -no-reboot every reset request becomes a shutdown
        m_reset_shutdown = true;
        return {};
    }
    // A machine restored from a snapshot reboots into -kernel like any other; without one
    // (-incoming needs none) there is nothing to boot, and nothing is reset.
    if (m_config.kernel.empty())
        return fail("system_reset: no -kernel to boot after the reset (the machine was built for -incoming without one)");
    for (auto& d : m_devices)
        d.device->reset();
    int64_t now = now_ns();
    for (auto& v : m_vcpus) {
        v.cpu().reset();
        v.cpu().set_tsc(uint64_t(now)); // the TSC stays on the machine's clock (clock.h)
    }
    m_board_stop.reset();
    m_reset_requested = false;
    TRY(load_kernel());
    for (auto& v : m_vcpus)
        v.cpu().flush_code_cache(); // the loader wrote the image behind the CPU's back
    bool ended = m_guest_ended.has_value();
    m_guest_ended.reset();
    // QEMU's qemu_system_reset(): the RESET event names who asked (guest-reset for a triple
    // fault, the i8042 or 0xCF9; host-qmp-system-reset for QMP).
    if (m_event_sink)
        m_event_sink(cause == ResetCause::Guest ? Event::GuestReset : Event::Reset);
    if (ended)
        pause(); // QEMU: a reset out of "shutdown" leaves the VM in "prelaunch" until cont
    return {};
}

void Machine::pause()
{
    if (m_paused)
        return;
    m_paused = true;
    if (m_event_sink)
        m_event_sink(Event::Stop);
}

void Machine::resume()
{
    if (!m_paused)
        return;
    m_paused = false;
    if (m_event_sink)
        m_event_sink(Event::Resume);
}

RunOutcome Machine::run()
{
    uint64_t total = 0;
    auto started = std::chrono::steady_clock::now();
    auto finish = [&](RunOutcome::Reason reason, int status, std::string message) {
        flush_serial();
        if (m_trace.enabled("machine")) {
            if (!message.empty())
                m_trace.emit("machine", message);
            double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            m_trace.emit("machine", fmt::format("exit status {}: {} instructions in {:.3f} s ({:.1f} MIPS), virtual time {:.6f} s",
                status, total, secs, secs > 0 ? double(total) / secs / 1e6 : 0.0, double(now_ns()) / 1e9));
        }
        return RunOutcome { reason, status, std::move(message), total };
    };
    auto done = [&](RunOutcome outcome) {
        // Requests that arrive from now on are refused; those already queued still run, so no
        // QMP client waits forever.
        {
            std::lock_guard lock(m_requests_mutex);
            m_finished = true;
        }
        run_requests();
        return outcome;
    };
    // The guest is over: power-off, triple fault, or a halt nothing can wake. With -no-shutdown
    // (QEMU's shutdown action "pause") the machine stays up for QMP; otherwise run() returns.
    auto guest_end = [&](RunOutcome outcome) -> std::optional<RunOutcome> {
        using R = RunOutcome::Reason;
        if (!m_config.no_shutdown || (outcome.reason != R::PowerOff && outcome.reason != R::TripleFault && outcome.reason != R::HaltedForever))
            return done(std::move(outcome));
        m_guest_ended = std::move(outcome);
        if (m_event_sink)
            m_event_sink(Event::Shutdown);
        if (m_guest_ended->reason != R::HaltedForever)
            pause(); // QEMU: vm_stop(RUN_STATE_SHUTDOWN)
        return std::nullopt;
    };
    for (;;) {
        run_requests();
        while ((m_paused || awaiting_snapshot()) && !m_quit && !m_reset_shutdown) {
            std::unique_lock lock(m_requests_mutex);
            m_requests_cv.wait(lock, [&] { return !m_requests.empty(); });
            lock.unlock();
            run_requests();
        }
        if (m_quit)
            return done(finish(RunOutcome::Reason::Quit, 0, {}));
        if (m_reset_shutdown)
            return done(finish(RunOutcome::Reason::ResetShutdown, 0, {}));
        if (m_guest_ended) {
            // -no-shutdown after the guest's end: only QMP requests remain, until quit.
            std::unique_lock lock(m_requests_mutex);
            m_requests_cv.wait(lock, [&] { return !m_requests.empty(); });
            continue;
        }
        if (m_sev && m_sev->state() != SevState::Running) {
            // QEMU's sev_vm_state_change(): the launch ends (LAUNCH_FINISH) when the guest first
            // runs, so a -S start leaves the QMP window for the measurement and the secret.
            if (auto r = m_sev->launch_finish(); !r)
                return done(finish(RunOutcome::Reason::HostError, 1, r.error().message));
        }
        // replay-break: stop exactly at the instruction count (the slice below ends there).
        std::optional<uint64_t> to_break;
        if (m_break_icount) {
            uint64_t retired = instructions_retired();
            if (retired >= *m_break_icount) {
                m_break_icount.reset();
                pause(); // QEMU replay_stop_vm(): vm_stop(RUN_STATE_PAUSED)
                continue;
            }
            to_break = *m_break_icount - retired;
        }
        m_started = true;
        poll_serial_input(0);
        // One round: every runnable vCPU in vCPU order runs one slice (clock.h).
        bool const exact = m_vcpus.size() == 1;
        uint64_t longest = 0;
        bool any_ran = false;
        m_ran.assign(m_vcpus.size(), 0);
        auto& ran = m_ran;
        std::optional<RunOutcome> ended;
        for (size_t i = 0; i < m_vcpus.size() && !ended && !m_reset_requested && !m_paused; ++i) {
            if (!runnable(i))
                continue;
            Vcpu& vcpu = m_vcpus[i];
            // Timers first: an expired PIT period becomes an IRQ 0 edge before the CPU looks;
            // a timer deadline ends the slice, so that its interrupt is raised on time.
            int64_t now = now_ns();
            advance_timers(now);
            uint64_t budget = exact ? kRunSlice : kSmpQuantum;
            if (auto deadline = next_timer_deadline(now))
                budget = std::clamp<uint64_t>(uint64_t(std::max<int64_t>(*deadline - now, 1)), 1, budget);
            // One vCPU stops at the exact instruction count; with more, the instruction limit
            // and replay-break take effect at the end of the round (a snapshot is always taken
            // between rounds, so that a restored machine replays the same interleaving).
            if (m_config.max_instructions && exact)
                budget = std::min(budget, m_config.max_instructions - total);
            if (to_break && exact) {
                uint64_t retired = instructions_retired();
                budget = std::min(budget, *m_break_icount > retired ? *m_break_icount - retired : 0);
            }
            if (budget == 0)
                break;
            uint64_t before = vcpu.instructions();
            any_ran = true;
            auto outcome = run_slice(vcpu, budget, total);
            ran[i] = vcpu.instructions() - before;
            longest = std::max(longest, ran[i]);
            // The others' TSCs move with the clock while they wait (clock.h).
            if (!exact && ran[i])
                for (size_t j = 0; j < m_vcpus.size(); ++j)
                    if (j != i)
                        m_vcpus[j].cpu().set_tsc(m_vcpus[j].cpu().tsc() + ran[i]);
            if (outcome)
                ended = std::move(outcome);
            else if (exact && m_config.max_instructions && total >= m_config.max_instructions)
                ended = finish(RunOutcome::Reason::InstructionLimit, 1,
                    fmt::format("instruction limit of {} reached at {} {:#x}", m_config.max_instructions,
                        vcpu.sev() ? "guest rip" : "rip", vcpu.guest_rip()));
        }
        if (m_vcpus.size() > 1) {
            if (!ended && m_config.max_instructions && total >= m_config.max_instructions)
                ended = finish(RunOutcome::Reason::InstructionLimit, 1,
                    fmt::format("instruction limit of {} reached at rip {:#x}", m_config.max_instructions,
                        m_vcpus.front().guest_rip()));
        }
        if (ended) {
            if (ended->reason == RunOutcome::Reason::InstructionLimit)
                return done(std::move(*ended));
            if (auto end = guest_end(finish(ended->reason, ended->exit_status, std::move(ended->message))))
                return *end;
            continue;
        }
        if (m_reset_requested) {
            m_reset_requested = false;
            if (auto r = system_reset(ResetCause::Guest); !r)
                return done(finish(RunOutcome::Reason::HostError, 1, r.error().message));
            continue;
        }
        if (!any_ran && !m_paused) {
            switch (sleep_until_interrupt()) {
            case Wake::Interrupt:
            case Wake::Request:
                continue;
            case Wake::Never:
                break;
            }
            if (auto end = guest_end(finish(RunOutcome::Reason::HaltedForever, 0,
                    fmt::format("guest halted at rip {:#x} with nothing that can wake it; stopping", m_vcpus.front().guest_rip()))))
                return *end;
            continue;
        }
    }
}

uint64_t Machine::instructions_retired() const
{
    uint64_t n = 0;
    for (auto const& v : m_vcpus)
        n += v.instructions();
    return n;
}

std::optional<RunOutcome> Machine::run_slice(Vcpu& vcpu, uint64_t slice, uint64_t& instructions)
{
    uint64_t start = vcpu.instructions();
    m_in_slice = true;
    for (;;) {
        uint64_t used = vcpu.instructions() - start;
        VcpuExit exit = used < slice ? vcpu.run(slice - used, *m_lapics[vcpu.index()]) : VcpuExit { vmm::ExitIntr {} };
        if (auto* sev = vcpu.sev(); sev && sev->apic_base() != m_lapics[vcpu.index()]->apic_base_msr()) {
            // The guest wrote IA32_APIC_BASE (checked by the hypervisor): the LAPIC follows, as
            // QEMU's userspace APIC does from kvm_run::apic_base (kvm_arch_post_run).
            if (!m_lapics[vcpu.index()]->write_msr(0x1B, sev->apic_base()))
                sev->set_apic_base(m_lapics[vcpu.index()]->apic_base_msr());
        }
        Step step = handle_exit(vcpu, exit);
        // A device that ends the run (isa-debug-exit, power-off) did so during the access just
        // completed: it is this vCPU's exit now.
        if (m_board_stop) {
            VcpuExit board = std::move(*m_board_stop);
            m_board_stop.reset();
            step = handle_exit(vcpu, board);
        }
        if (auto* next = std::get_if<Next>(&step); next && *next == Next::Resume)
            continue;
        m_in_slice = false;
        instructions += vcpu.instructions() - start;
        if (auto* end = std::get_if<RunOutcome>(&step))
            return std::move(*end);
        return std::nullopt;
    }
}

namespace {
// The termination reasons of the GHCB specification (56421 §4.1.13: set 0) and Linux's own set 1
// (arch/x86/include/asm/sev-common.h SEV_TERM_SET_LINUX, GHCB_TERM_*).
char const* sev_termination_reason(unsigned set, unsigned code)
{
    if (set == 0) {
        switch (code) {
        case 0: return "general termination request";
        case 1: return "SEV-ES / GHCB protocol range is not supported";
        case 2: return "SEV-SNP features not supported";
        }
    } else if (set == 1) {
        switch (code) {
        case 0: return "Linux: GHCB registration failed";
        case 1: return "Linux: page state change failed";
        case 2: return "Linux: PVALIDATE failed";
        case 3: return "Linux: not running at VMPL0";
        case 4: return "Linux: CPUID validation failed";
        case 5: return "Linux: CPUID failed in the hypervisor fallback";
        }
    }
    return "unknown reason";
}
} // namespace

// The one place where what a vCPU did becomes what the machine does, for plain and SEV guests
// alike. One handler per exit kind (KVM's exit reasons and the board's stop causes), no
// catch-all: a new kind of exit that is not handled here is a compile error (base/overloaded.h).
Machine::Step Machine::handle_exit(Vcpu& vcpu, VcpuExit& exit)
{
    uint64_t rip = vcpu.guest_rip();
    auto outcome = [](RunOutcome::Reason reason, int status, std::string message) -> Step {
        return RunOutcome { reason, status, std::move(message), 0 };
    };
    auto needs_sev = [&](std::string_view what) -> Step {
        return outcome(RunOutcome::Reason::HostError, 1, fmt::format("internal: a {} exit from a vCPU without a hypervisor", what));
    };
    return std::visit(Overloaded {
        [](vmm::ExitIrqWindowOpen const&) -> Step { return Next::Resume; },
        [&](vmm::ExitMmio const& mmio) -> Step {
            // KVM_EXIT_MMIO: the machine's MMIO bus (guest-visible devices; unclaimed addresses
            // read as all-ones and drop writes, as on the plain path).
            if (!vcpu.sev())
                return needs_sev("MMIO");
            if (mmio.is_write)
                m_ios[vcpu.index()]->mmio_write(Spa(mmio.gpa), mmio.size, mmio.data);
            else
                vcpu.sev()->complete_mmio_read(m_ios[vcpu.index()]->mmio_read(Spa(mmio.gpa), mmio.size));
            return Next::Resume;
        },
        [&](vmm::ExitIo const& io) -> Step {
            // KVM_EXIT_IO: the machine's port-I/O bus, the same devices as without SEV.
            if (!vcpu.sev())
                return needs_sev("port I/O");
            if (io.in)
                vcpu.sev()->complete_io_in(m_ios[vcpu.index()]->port_in(io.port, io.size));
            else
                m_ios[vcpu.index()]->port_out(io.port, io.size, io.value);
            return Next::Resume;
        },
        [&](vmm::ExitHypercall const& hc) -> Step {
            // KVM_HC_MAP_GPA_RANGE (gpa, pages, attributes): checked and recorded in the VM's
            // shared-regions list; SEV needs no change to the nested page tables, the guest's
            // C-bit picks the key.
            if (!vcpu.sev() || !m_sev)
                return needs_sev("hypercall");
            vcpu.sev()->complete_hypercall(m_sev->map_gpa_range({ hc.args[0], hc.args[1], hc.args[2] }));
            return Next::Resume;
        },
        // The time slice is over, or a request is waiting.
        [](vmm::ExitIntr const&) -> Step { return Next::EndSlice; },
        [&](vmm::ExitHlt const&) -> Step {
            // HLT: the vCPU's slice ends and it stays halted (an SEV vCPU through its
            // KVM_MP_STATE_HALTED) until an interrupt it can take is pending. When no vCPU can
            // run, the loop sleeps until the next timer event or serial input; with IF=0, or no
            // timer armed, or its IRQ masked, nothing ever will wake it: QEMU would sit there
            // forever; we end the run (QUIRKS.md).
            if (vcpu.sev())
                vcpu.set_halted();
            return Next::EndSlice;
        },
        [&](vmm::ExitShutdown const&) -> Step {
            // Triple fault (APM vol 2 §8.2.9): the processor enters shutdown and the platform
            // resets it. QEMU (target/i386/tcg/excp_helper.c check_exception) makes it
            // qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET): a reboot, or with
            // -no-reboot (reboot action "shutdown", softmmu/runstate.c) a shutdown whose
            // SHUTDOWN event says "guest-reset" and after which QEMU exits with status 0.
            if (m_config.no_reboot)
                return outcome(RunOutcome::Reason::TripleFault, 0, fmt::format("guest triple fault (shutdown) at rip {:#x}", rip));
            if (m_sev) // an encrypted guest cannot be launched again (QUIRKS.md)
                return outcome(RunOutcome::Reason::TripleFault, 1,
                    fmt::format("guest triple fault (shutdown) at rip {:#x}; an SEV guest cannot be relaunched, stopping", rip));
            if (m_trace.enabled("machine"))
                m_trace.emit("machine", fmt::format("guest triple fault (shutdown) at rip {:#x}: system reset", rip));
            request_reset(); // the run loop resets the machine after this round, as for the i8042
            return Next::EndSlice;
        },
        [&](vmm::ExitFailEntry const& f) -> Step {
            return outcome(RunOutcome::Reason::HostError, 1,
                fmt::format("VMRUN of the SEV guest failed its consistency checks (exit code {:#x}) at rip {:#x}",
                    f.hardware_entry_failure_reason, rip));
        },
        [&](vmm::ExitInternalError const& e) -> Step {
            return outcome(RunOutcome::Reason::HostError, 1, fmt::format("SEV guest stopped at rip {:#x}: {}", rip, e.reason));
        },
        [&](vmm::ExitSevTerm const& t) -> Step {
            // KVM_SYSTEM_EVENT_SEV_TERM: the guest gave up (GHCB MSR protocol 0x100 or NAE
            // 0x8000_FFFE). QEMU makes it qemu_system_guest_panicked(); sevemu ends the run with
            // the guest's reason (GHCB spec 56421 §4.1.13; Linux sev-common.h SEV_TERM_SET_*).
            return outcome(RunOutcome::Reason::GuestPanic, 1,
                fmt::format("the SEV-ES guest asked to be terminated: reason set {}, code {} ({})", t.reason_set,
                    t.reason_code, sev_termination_reason(t.reason_set, t.reason_code)));
        },
        [&](vmm::ExitApResetHold const&) -> Step {
            // KVM_EXIT_AP_RESET_HOLD: the AP parked itself until its next SIPI (runnable() keeps
            // it off the CPU; Vcpu::sev_sipi releases it).
            if (vcpu.sev())
                vcpu.set_halted();
            return Next::EndSlice;
        },
        [&](ExitDebugExit const& d) -> Step { return outcome(RunOutcome::Reason::DebugExit, d.status, {}); },
        [&](ExitPowerOff const&) -> Step { return outcome(RunOutcome::Reason::PowerOff, 0, {}); },
    }, exit);
}

} // namespace sevemu::emulator
