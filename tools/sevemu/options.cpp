#include "tools/sevemu/options.h"

#include "base/encoding.h"
#include "emulator/migration.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fmt/format.h>
#include <map>
#include <string_view>
#include <sys/un.h>

namespace sevemu::cli {

namespace {

using emulator::SevGuestConfig;

Unexpected<CliError> fail(std::string msg) { return Unexpected<CliError>(CliError { std::move(msg) }); }

// A QEMU property list "a=b,c,d=e" (QemuOpts / keyval): ",," is a literal comma. A leading item
// without '=' is the implied key (-machine TYPE, -device DRIVER, -object TYPE, -smp N, -m SIZE).
struct Prop {
    std::string key;
    std::optional<std::string> value;
};

std::vector<Prop> split_props(std::string_view s)
{
    std::vector<std::string> items;
    std::string item;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == ',') {
            if (i + 1 < s.size() && s[i + 1] == ',') {
                item.push_back(',');
                ++i;
                continue;
            }
            items.push_back(std::move(item));
            item.clear();
            continue;
        }
        item.push_back(s[i]);
    }
    items.push_back(std::move(item));
    std::vector<Prop> out;
    for (auto& it : items) {
        auto eq = it.find('=');
        if (eq == std::string::npos)
            out.push_back({ it, std::nullopt });
        else
            out.push_back({ it.substr(0, eq), it.substr(eq + 1) });
    }
    return out;
}

// QEMU's integer properties take decimal, 0x hex or 0 octal (strtoull with base 0).
std::optional<uint64_t> parse_uint(std::string const& s)
{
    if (s.empty() || s[0] == '-' || s[0] == '+' || std::isspace(uint8_t(s[0])))
        return std::nullopt;
    errno = 0;
    char* end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 0);
    if (errno || *end)
        return std::nullopt;
    return v;
}

std::optional<bool> parse_bool(std::string const& s)
{
    if (s == "on" || s == "yes" || s == "true")
        return true;
    if (s == "off" || s == "no" || s == "false")
        return false;
    return std::nullopt;
}

std::string cpu_model_list()
{
    std::string list;
    for (auto m : kAllCpuModels) {
        if (!list.empty())
            list += ", ";
        list += cpu_model_name(m);
    }
    return list;
}

struct Parser {
    Options opts;
    std::map<std::string, SevGuestConfig> objects; // -object by id
    std::optional<std::string> cgs_id;              // -machine confidential-guest-support=
    bool serial_given { false };
    bool nographic { false };

    Result<void, CliError> memory(std::string const& arg);
    Result<void, CliError> smp(std::string const& arg);
    Result<void, CliError> cpu(std::string const& arg);
    Result<void, CliError> serial(std::string const& arg);
    Result<void, CliError> display(std::string const& arg);
    Result<void, CliError> device(std::string const& arg);
    Result<void, CliError> trace(std::string const& arg);
    Result<void, CliError> machine(std::string const& arg);
    Result<void, CliError> object(std::string const& arg);
    Result<void, CliError> finish();
};

Result<void, CliError> Parser::memory(std::string const& arg)
{
    opts.machine.memory_size = TRY(parse_memory(arg));
    return {};
}

Result<void, CliError> Parser::smp(std::string const& arg)
{
    // QEMU's -smp [cpus=]N[,sockets=S][,dies=D][,clusters=C][,cores=C][,threads=T][,maxcpus=M]:
    // without cpus= the count is the product of the topology's factors (hw/core/machine-smp.c).
    // sevemu models one socket of N cores (APIC IDs 0..N-1); the factors only give the count.
    std::optional<uint64_t> cpus, maxcpus;
    uint64_t product = 1;
    for (auto const& p : split_props(arg)) {
        std::string text = p.value ? *p.value : p.key;
        if (p.value && p.key != "cpus" && p.key != "sockets" && p.key != "dies" && p.key != "clusters"
            && p.key != "cores" && p.key != "threads" && p.key != "maxcpus")
            return fail(fmt::format("-smp {}: invalid parameter '{}'", arg, p.key));
        auto v = parse_uint(text);
        if (!v || *v == 0)
            return fail(fmt::format("-smp {}: invalid number '{}'", arg, text));
        if (!p.value || p.key == "cpus")
            cpus = *v;
        else if (p.key == "maxcpus")
            maxcpus = *v;
        else
            product = std::min<uint64_t>(product * *v, 1u << 20);
    }
    uint64_t n = cpus ? *cpus : product;
    if (maxcpus && *maxcpus != n)
        return fail(fmt::format("-smp {}: unsupported: maxcpus must equal the vCPU count (no CPU hotplug)", arg));
    if (n > emulator::kMaxVcpus)
        return fail(fmt::format("-smp {}: unsupported: at most {} vCPUs", arg, emulator::kMaxVcpus));
    opts.machine.smp = uint32_t(n);
    return {};
}

Result<void, CliError> Parser::cpu(std::string const& arg)
{
    auto props = split_props(arg);
    if (props[0].key == "help" || props[0].key == "?") {
        opts.list_cpus = true;
        return {};
    }
    auto model = cpu_model_from_name(props[0].key);
    if (!model || props[0].value)
        return fail(fmt::format("-cpu {}: unknown CPU model (valid: {})", arg, cpu_model_list()));
    if (props.size() > 1)
        return fail(fmt::format("-cpu {}: CPU feature flags are unsupported: the model fixes CPUID", arg));
    opts.machine.cpu_model = *model;
    return {};
}

Result<void, CliError> Parser::serial(std::string const& arg)
{
    if (serial_given)
        return fail(fmt::format("-serial {}: only one serial port (COM1) is supported", arg));
    serial_given = true;
    auto& s = opts.machine.serial;
    if (arg == "stdio" || arg == "mon:stdio") {
        s.kind = emulator::SerialConfig::Kind::Stdio;
    } else if (arg == "none" || arg == "null") {
        s.kind = emulator::SerialConfig::Kind::None;
    } else if (arg.rfind("file:", 0) == 0 && arg.size() > 5) {
        s.kind = emulator::SerialConfig::Kind::File;
        s.path = arg.substr(5);
    } else {
        return fail(fmt::format("-serial {}: unsupported character device (use stdio, file:PATH or none)", arg));
    }
    return {};
}

Result<void, CliError> Parser::display(std::string const& arg)
{
    if (split_props(arg)[0].key != "none")
        return fail(fmt::format("-display {}: unsupported display (sevemu has no screen: use -display none)", arg));
    return {};
}

Result<void, CliError> Parser::device(std::string const& arg)
{
    auto props = split_props(arg);
    std::string driver = props[0].key;
    size_t first = 1;
    if (props[0].value) {
        if (props[0].key != "driver")
            return fail(fmt::format("-device {}: parameter 'driver' is missing", arg));
        driver = *props[0].value;
    }
    if (driver != "isa-debug-exit")
        return fail(fmt::format("-device {}: unsupported device '{}' (supported: isa-debug-exit)", arg, driver));
    devices::DebugExitConfig cfg;
    for (size_t i = first; i < props.size(); ++i) {
        auto const& p = props[i];
        if (p.key != "iobase" && p.key != "iosize")
            return fail(fmt::format("-device {}: property '{}.{}' not found", arg, driver, p.key));
        auto v = p.value ? parse_uint(*p.value) : std::nullopt;
        if (!v || *v > 0xFFFF)
            return fail(fmt::format("-device {}: invalid value for {}: '{}'", arg, p.key, p.value.value_or("")));
        (p.key == "iobase" ? cfg.iobase : cfg.iosize) = *v;
    }
    if (cfg.iosize == 0 || cfg.iobase + cfg.iosize > 0x10000)
        return fail(fmt::format("-device {}: iobase/iosize do not form a port range", arg));
    if (opts.machine.debug_exit)
        return fail(fmt::format("-device {}: only one isa-debug-exit device is supported", arg));
    opts.machine.debug_exit = cfg;
    return {};
}

Result<void, CliError> Parser::trace(std::string const& arg)
{
    for (auto const& p : split_props(arg)) {
        if (!p.value) {
            if (!p.key.empty())
                opts.machine.trace_patterns.push_back(p.key);
        } else if (p.key == "enable") {
            opts.machine.trace_patterns.push_back(*p.value);
        } else if (p.key == "file") {
            opts.machine.trace_file = *p.value;
        } else {
            return fail(fmt::format("-trace {}: unsupported parameter '{}' (use PATTERN, enable=PATTERN, file=FILE)", arg, p.key));
        }
    }
    return {};
}

Result<void, CliError> Parser::machine(std::string const& arg)
{
    auto props = split_props(arg);
    for (size_t i = 0; i < props.size(); ++i) {
        auto const& p = props[i];
        std::string type;
        if (!p.value) {
            if (i != 0)
                return fail(fmt::format("-machine {}: invalid parameter '{}'", arg, p.key));
            type = p.key;
        } else if (p.key == "type") {
            type = *p.value;
        } else if (p.key == "confidential-guest-support" || p.key == "memory-encryption") {
            cgs_id = *p.value;
            continue;
        } else if (p.key == "accel") {
            if (*p.value != "tcg")
                return fail(fmt::format("-machine {}: accelerator '{}' is unsupported (sevemu is its own: accel=tcg is accepted)", arg, *p.value));
            continue;
        } else {
            return fail(fmt::format("-machine {}: unsupported machine property '{}'", arg, p.key));
        }
        // The emulated board is a PC; QEMU's x86 machine type names are accepted for it.
        if (type == "help")
            return fail("-machine help: the only machine is 'pc' (aliases: q35, pc-q35-*, pc-i440fx-*)");
        if (type != "pc" && type != "q35" && type.rfind("pc-q35", 0) != 0 && type.rfind("pc-i440fx", 0) != 0)
            return fail(fmt::format("-machine {}: unsupported machine type '{}' (use pc or q35)", arg, type));
    }
    return {};
}

Result<void, CliError> Parser::object(std::string const& arg)
{
    auto props = split_props(arg);
    std::string type = props[0].key;
    size_t first = 1;
    if (props[0].value) {
        if (props[0].key != "qom-type")
            return fail(fmt::format("-object {}: parameter 'qom-type' is missing", arg));
        type = *props[0].value;
    }
    SevGuestConfig g;
    if (type == "sev-guest") {
        g.type = SevGuestConfig::Type::Sev;
        g.policy = 0x1; // QEMU's DEFAULT_GUEST_POLICY: no debugging
    } else if (type == "sev-snp-guest") {
        g.type = SevGuestConfig::Type::SevSnp;
        g.policy = 0x30000; // QEMU's DEFAULT_SEV_SNP_POLICY: SMT allowed, reserved bit 17
    } else {
        return fail(fmt::format("-object {}: unsupported object type '{}' (supported: sev-guest, sev-snp-guest)", arg, type));
    }
    bool snp = g.type == SevGuestConfig::Type::SevSnp;
    auto bad_value = [&](Prop const& p, std::string_view want) {
        return fail(fmt::format("-object {}: property '{}' needs {}, got '{}'", arg, p.key, want, p.value.value_or("")));
    };
    auto blob = [&](Prop const& p, size_t want_size, std::vector<uint8_t>& out) -> Result<void, CliError> {
        auto bytes = p.value ? from_base64(*p.value) : std::nullopt;
        if (!bytes)
            return bad_value(p, "base64 data");
        if (want_size && bytes->size() != want_size)
            return fail(fmt::format("-object {}: {} must be {} bytes, got {}", arg, p.key, want_size, bytes->size()));
        out = std::move(*bytes);
        return {};
    };
    for (size_t i = first; i < props.size(); ++i) {
        auto const& p = props[i];
        if (!p.value)
            return fail(fmt::format("-object {}: property '{}' has no value", arg, p.key));
        std::string const& v = *p.value;
        if (p.key == "id") {
            g.id = v;
        } else if (p.key == "policy") {
            auto n = parse_uint(v);
            if (!n || (!snp && *n > 0xFFFFFFFFull))
                return bad_value(p, snp ? "a 64-bit number" : "a 32-bit number");
            g.policy = *n;
        } else if (p.key == "cbitpos" || p.key == "reduced-phys-bits") {
            auto n = parse_uint(v);
            if (!n || *n > 0xFFFFFFFFull)
                return bad_value(p, "a number");
            (p.key == "cbitpos" ? g.cbitpos : g.reduced_phys_bits) = uint32_t(*n);
        } else if (p.key == "kernel-hashes") {
            auto b = parse_bool(v);
            if (!b)
                return bad_value(p, "on or off");
            g.kernel_hashes = *b;
        } else if (p.key == "sev-device") {
            // QEMU opens this (/dev/sev); sevemu's AMD-SP is built in: accepted and unused.
        } else if (!snp && p.key == "handle") {
            auto n = parse_uint(v);
            if (!n || *n > 0xFFFFFFFFull)
                return bad_value(p, "a 32-bit number");
            g.handle = uint32_t(*n);
        } else if (!snp && p.key == "dh-cert-file") {
            g.dh_cert_file = v;
        } else if (!snp && p.key == "session-file") {
            g.session_file = v;
        } else if (snp && p.key == "id-block") {
            TRY(blob(p, 96, g.id_block)); // SNP ABI 56860 Table 75: ID block
        } else if (snp && p.key == "id-auth") {
            TRY(blob(p, 4096, g.id_auth)); // SNP ABI 56860 Table 76: ID authentication info
        } else if (snp && p.key == "host-data") {
            TRY(blob(p, 32, g.host_data));
        } else if (snp && p.key == "guest-visible-workarounds") {
            TRY(blob(p, 16, g.guest_visible_workarounds));
        } else if (snp && p.key == "author-key-enabled") {
            auto b = parse_bool(v);
            if (!b)
                return bad_value(p, "on or off");
            g.author_key_enabled = *b;
        } else {
            return fail(fmt::format("-object {}: property '{}.{}' not found", arg, type, p.key));
        }
    }
    if (g.id.empty())
        return fail(fmt::format("-object {}: parameter 'id' is missing", arg));
    if (objects.count(g.id))
        return fail(fmt::format("-object {}: duplicate object id '{}'", arg, g.id));
    objects.emplace(g.id, std::move(g));
    return {};
}

Result<void, CliError> Parser::finish()
{
    if (nographic && !serial_given)
        opts.machine.serial.kind = emulator::SerialConfig::Kind::Stdio; // QEMU: -nographic => -serial mon:stdio
    if (cgs_id) {
        auto it = objects.find(*cgs_id);
        if (it == objects.end())
            return fail(fmt::format("-machine confidential-guest-support={}: no -object with id={}", *cgs_id, *cgs_id));
        auto const& g = it->second;
        auto const& info = cpu_model_info(opts.machine.cpu_model);
        std::string what = fmt::format("-object {},id={}", g.type == SevGuestConfig::Type::Sev ? "sev-guest" : "sev-snp-guest", g.id);
        // QEMU sev_common_kvm_init(): the C-bit position and the reduced physical address bits
        // must match what the CPU reports in CPUID 8000_001F EBX.
        if (g.cbitpos != info.c_bit)
            return fail(fmt::format("{}: cbitpos check failed, CPU model {} has the C-bit at {}, requested {}", what,
                info.name, info.c_bit, g.cbitpos));
        if (g.reduced_phys_bits < 1)
            return fail(fmt::format("{}: reduced-phys-bits check failed, it should be >= 1, requested {}", what,
                g.reduced_phys_bits));
        if (g.type == SevGuestConfig::Type::SevSnp && !cpu_model_has_sev_snp(opts.machine.cpu_model))
            return fail(fmt::format("{}: CPU model {} has no SEV-SNP (EPYC-Milan or later)", what, info.name));
        if (g.type == SevGuestConfig::Type::Sev && (g.policy & 0x4) && !cpu_model_has_sev_es(opts.machine.cpu_model))
            return fail(fmt::format("{}: policy {:#x} asks for SEV-ES, which CPU model {} ({}) lacks", what, g.policy,
                info.name, info.amd_product));
        opts.machine.confidential_guest = g;
    }
    if (opts.machine.platform_dir.empty()) {
        if (char const* env = std::getenv("SEVEMU_PLATFORM"); env && *env)
            opts.machine.platform_dir = env;
        else if (char const* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
            opts.machine.platform_dir = std::string(xdg) + "/sevemu/platform";
        else if (char const* home = std::getenv("HOME"); home && *home)
            opts.machine.platform_dir = std::string(home) + "/.local/share/sevemu/platform";
    }
    return {};
}

// A Unix socket's path must fit sockaddr_un's sun_path with its terminating NUL (unix(7));
// checked here, where the user's text is, so it is one error line and never a failed bind.
Result<void, CliError> check_qmp(std::string const& spec)
{
    if (spec.rfind("unix:", 0) != 0)
        return {};
    std::string path = spec.substr(5, spec.find(',') == std::string::npos ? std::string::npos : spec.find(',') - 5);
    constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
    if (path.size() > kMax)
        return fail(fmt::format("-qmp {}: socket path too long ({} bytes; a Unix socket path has at most {})",
            spec.size() > 200 ? spec.substr(0, 200) + "..." : spec, path.size(), kMax));
    return {};
}

enum class Arg : uint8_t { None, Required };

} // namespace

std::optional<uint64_t> parse_size(std::string const& text, uint64_t default_unit)
{
    if (text.empty() || !(std::isdigit(uint8_t(text[0])) || text[0] == '.'))
        return std::nullopt;
    size_t pos = 0;
    while (pos < text.size() && (std::isdigit(uint8_t(text[pos])) || text[pos] == '.'))
        ++pos;
    std::string number = text.substr(0, pos);
    if (std::count(number.begin(), number.end(), '.') > 1 || number == ".")
        return std::nullopt;
    uint64_t unit = default_unit;
    if (pos < text.size()) {
        if (pos + 1 != text.size())
            return std::nullopt;
        switch (std::toupper(uint8_t(text[pos]))) {
        case 'B': unit = 1; break;
        case 'K': unit = 1ull << 10; break;
        case 'M': unit = 1ull << 20; break;
        case 'G': unit = 1ull << 30; break;
        case 'T': unit = 1ull << 40; break;
        case 'P': unit = 1ull << 50; break;
        case 'E': unit = 1ull << 60; break;
        default: return std::nullopt;
        }
    }
    long double v = std::strtold(number.c_str(), nullptr) * (long double)unit;
    if (!std::isfinite(v) || v >= 18446744073709551615.0L)
        return std::nullopt;
    // QEMU rejects fractions that do not come to whole bytes.
    if (v != std::floor(v))
        return std::nullopt;
    return uint64_t(v);
}

Result<uint64_t, CliError> parse_memory(std::string const& arg)
{
    std::optional<uint64_t> size;
    for (auto const& p : split_props(arg)) {
        if (!p.value || p.key == "size") {
            std::string text = p.value ? *p.value : p.key;
            size = parse_size(text, 1ull << 20);
            if (!size)
                return fail(fmt::format("-m {}: invalid size '{}' (a number of MiB, or with a K, M, G or T suffix)", arg, text));
        } else if (p.key == "slots" || p.key == "maxmem") {
            return fail(fmt::format("-m {}: '{}' is unsupported (no memory hotplug)", arg, p.key));
        } else {
            return fail(fmt::format("-m {}: invalid parameter '{}'", arg, p.key));
        }
    }
    if (!size)
        return fail(fmt::format("-m {}: missing size", arg));
    if (*size < (2ull << 20))
        return fail(fmt::format("-m {}: too little memory (at least 2M)", arg));
    if (*size > (1ull << 40))
        return fail(fmt::format("-m {}: too much memory (at most 1T)", arg));
    return (*size + 4095) & ~uint64_t(4095);
}

std::string usage()
{
    return "Usage: sevemu [options] -kernel FILE\n"
           "       sevemu [options] -incoming tcp:HOST:PORT|file:PATH|exec:CMD|defer\n"
           "An emulated AMD EPYC PC with SEV; the command line follows qemu-system-x86_64.\n"
           "\n"
           "  -m SIZE                   guest RAM (default 128M; suffixes K, M, G, T; MiB without one)\n"
           "  -smp N                    number of vCPUs (1 to 64; an SEV guest: 1)\n"
           "  -cpu MODEL                EPYC, EPYC-Rome, EPYC-Milan (default), EPYC-Genoa; -cpu help lists them\n"
           "  -kernel FILE              Multiboot v1 kernel (ELF32, or any file with the a.out kludge)\n"
           "  -initrd FILE[,FILE...]    Multiboot modules (\"FILE ARGS\" passes arguments; ,, is a comma)\n"
           "  -append CMDLINE           kernel command line\n"
           "  -serial stdio|file:PATH|none   where COM1 goes (default none; stdio with -nographic)\n"
           "  -display none             no display (the only one)\n"
           "  -nographic                no display, COM1 on stdio\n"
           "  -no-reboot                exit instead of rebooting on a guest reset or triple fault\n"
           "  -no-shutdown              on guest shutdown stop the machine but keep QMP serving (until quit)\n"
           "  -device isa-debug-exit[,iobase=N][,iosize=N]\n"
           "                            a guest write of V to the port exits with status (V << 1) | 1\n"
           "  -machine [TYPE,]confidential-guest-support=ID\n"
           "  -object sev-guest,id=ID,policy=N,cbitpos=N,reduced-phys-bits=N[,handle=N][,dh-cert-file=F]\n"
           "          [,session-file=F][,kernel-hashes=on|off]\n"
           "  -object sev-snp-guest,id=ID,policy=N,cbitpos=N,reduced-phys-bits=N[,id-block=B64][,id-auth=B64]\n"
           "          [,author-key-enabled=on|off][,host-data=B64][,guest-visible-workarounds=B64][,kernel-hashes=on|off]\n"
           "                            sev-guest runs an SEV guest (not SEV-ES); sev-snp-guest is checked,\n"
           "                            then refused (not yet)\n"
           "  --platform DIR            the emulated AMD-SP's persistent state\n"
           "                            (default $SEVEMU_PLATFORM, else $XDG_DATA_HOME/sevemu/platform)\n"
           "  -trace PATTERN            trace events matching PATTERN (e.g. psp, 'psp*', sev, ioport, multiboot)\n"
           "  -D LOGFILE                write traces to LOGFILE instead of stderr\n"
           "  -S                        start paused (\"prelaunch\"); QMP's cont starts the guest\n"
           "  -qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off   QMP control socket\n"
           "  -incoming tcp:HOST:PORT | file:PATH | exec:CMD | defer\n"
           "                            receive a live migration (QMP migrate tcp:) on HOST:PORT, or restore a\n"
           "                            snapshot instead of booting -kernel: from a file, from the stdout of\n"
           "                            `/bin/sh -c CMD`, or from QMP migrate-incoming later; the guest then runs,\n"
           "                            or stays paused with -S\n"
           "  -h, --help                this text\n"
           "  --version                 version\n"
           "\n"
           "Exit status: the guest's isa-debug-exit status, 0 on guest power-off or halt, 1 on errors,\n"
           "70 on an internal error (a bug in sevemu: please report it).\n";
}

Result<Options, CliError> parse_options(std::vector<std::string> const& args)
{
    Parser P;
    auto& mc = P.opts.machine;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        if (a.empty() || a[0] != '-')
            return fail(fmt::format("{}: disk images are not supported (use -kernel FILE)", a));
        std::string name = a.substr(a.rfind("--", 0) == 0 ? 2 : 1);
        // Options without an argument.
        if (name == "h" || name == "help") {
            P.opts.help = true;
            continue;
        }
        if (name == "version") {
            P.opts.version = true;
            continue;
        }
        if (name == "nographic") {
            P.nographic = true;
            continue;
        }
        if (name == "no-reboot") {
            mc.no_reboot = true;
            continue;
        }
        if (name == "no-shutdown") {
            mc.no_shutdown = true;
            continue;
        }
        if (name == "nodefaults" || name == "no-user-config")
            continue; // sevemu has no default devices beyond COM1 and no user config
        if (name == "S") {
            P.opts.start_paused = true;
            continue;
        }
        if (name == "enable-kvm")
            return fail("-enable-kvm: unsupported: sevemu emulates the CPU itself");
        // Options with an argument.
        static constexpr std::string_view kWithArg[] = { "m", "smp", "cpu", "kernel", "initrd", "append", "serial",
            "display", "device", "platform", "trace", "D", "machine", "M", "object", "qmp", "incoming", "accel", "bios",
            "drive", "hda", "cdrom", "netdev", "nic", "monitor", "chardev", "name", "vga", "boot", "smbios", "fw_cfg" };
        bool known = false;
        for (auto k : kWithArg)
            known |= (k == name);
        if (!known)
            return fail(fmt::format("{}: invalid option (see --help)", a));
        if (i + 1 >= args.size())
            return fail(fmt::format("{}: requires an argument", a));
        std::string const& v = args[++i];
        if (name == "m")
            TRY(P.memory(v));
        else if (name == "smp")
            TRY(P.smp(v));
        else if (name == "cpu")
            TRY(P.cpu(v));
        else if ((name == "kernel" || name == "initrd") && v.empty())
            return fail(fmt::format("{} '': empty file name", a));
        else if (name == "kernel")
            mc.kernel = v;
        else if (name == "initrd")
            mc.initrd = v;
        else if (name == "append")
            mc.append = v;
        else if (name == "serial")
            TRY(P.serial(v));
        else if (name == "display")
            TRY(P.display(v));
        else if (name == "device")
            TRY(P.device(v));
        else if (name == "platform" && v.empty())
            return fail(fmt::format("{} '': empty directory name (omit the option for the default directory)", a));
        else if (name == "platform")
            mc.platform_dir = v;
        else if (name == "trace")
            TRY(P.trace(v));
        else if (name == "D")
            mc.trace_file = v;
        else if (name == "machine" || name == "M")
            TRY(P.machine(v));
        else if (name == "object")
            TRY(P.object(v));
        else if (name == "qmp") {
            TRY(check_qmp(v));
            P.opts.qmp.push_back(v); // checked in full when the socket is opened
        }
        else if (name == "incoming") {
            // Checked here so that a bad URI is one line before anything starts, as QEMU's
            // "-incoming URI: unknown migration protocol: URI".
            if (v != "defer")
                if (auto u = emulator::parse_incoming_uri(v); !u)
                    return fail(fmt::format("-incoming {}: {}", v, u.error()));
            P.opts.incoming = v;
        }
        else if (name == "accel") {
            if (split_props(v)[0].key != "tcg")
                return fail(fmt::format("-accel {}: unsupported accelerator (sevemu is its own; tcg is accepted)", v));
        } else if (name == "bios")
            return fail(fmt::format("-bios {}: unsupported yet: firmware boot (OVMF) comes later; use -kernel", v));
        else
            return fail(fmt::format("{} {}: unsupported option (sevemu boots from -kernel and has no disks or network yet)", a, v));
    }
    TRY(P.finish());
    return std::move(P.opts);
}

} // namespace sevemu::cli
