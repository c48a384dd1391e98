// sevemu-bench migration: a live migration of a guest with 512 MiB of touched memory between two
// machines over loopback TCP (emulator/migration.cpp: the stream, the pre-copy, the target's
// load and answer, all as `migrate tcp:` runs them), beside plain memcpy, loopback TCP and the
// SEV crypto ceiling of this host, all measured in the same run.
//
// The two machines run in this process, each on its own thread as sevemu runs one (Machine::run),
// with the Migration objects sevemu's QMP drives; the source is a 1 GiB machine whose RAM from
// 64 MiB up holds 512 MiB of pseudo-random bytes, written before it starts (incompressible and
// never zero, so every page travels whole). Its guest is either
//   idle: `sti; hlt; jmp .-3`, as an idle OS sits in HLT with interrupts on (Linux's safe_halt).
//         Nothing can wake it, so the machines run as sevemu -no-shutdown runs them (QUIRKS.md:
//         the machine stays up, its thread asleep until a request comes, such as the migration's
//         own); the machine thread is the encoder's alone — the figures of issue 12;
//   busy: `pause; jmp .-2`, a vCPU that runs all the time and writes no memory: the source's
//         machine thread shares its time between the guest and the encoder (QEMU's vCPUs have
//         threads of their own; sevemu's share the machine's), so this shows that cost.
// Row sets: a plain guest (bench-trivial.elf, the loop at its entry) and an SEV guest
// (bench-trivial-sev.elf, policy 0x1 as migrate_sev.py; the loop written at guest_main and the
// 512 MiB written through its key, so that they are private pages: every one goes through
// SEND_UPDATE_DATA on the source and RECEIVE_UPDATE_DATA on the target, with the target's PDH
// and chain given as migrate-set-sev-info gives them). An SEV guest's untouched private pages
// travel too (sev_migration.cpp: DRAM's zeros decrypt to the guest's bytes under its key, which
// only RECEIVE_UPDATE_DATA reproduces), so the SEV stream carries the whole 1 GiB less the
// hypervisor's reserve, about twice the plain one. Rows: total time, stream throughput (against
// loopback TCP, memcpy and, for SEV, the crypto ceiling below), downtime (against QEMU's default
// downtime-limit, 300 ms), the pre-copy's passes and the process's CPU time during the migration
// (steadier than wall time on a shared host). SEVEMU_BENCH_MIGRATION_ONLY=plain|sev runs one
// guest kind, SEVEMU_BENCH_MIGRATION_GUEST=idle|busy one guest loop (profiling). (Pinning each
// side to its own core, as two hosts, made no difference that a run on this shared 2-core host
// could tell, so the threads are not pinned.)
#include "bench.h"

#include "base/epyc_model.h"
#include "emulator/machine.h"
#include "emulator/migration.h"
#include "emulator/sev_runtime.h"
#include "firmware/platform_store.h"
#include "mmu/aes_xts.h"
#include "mmu/memory_controller.h"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <elf.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace sevemu::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kTouched = 512ull << 20;
constexpr uint64_t kTouchedBase = 64ull << 20;
constexpr uint64_t kMachineMemory = 1ull << 30;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string guest_dir()
{
    if (char const* root = std::getenv("SEVEMU_BUILD_ROOT"); root && *root)
        return std::string(root) + "/tests/guests/bench";
    char exe[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return "tests/guests/bench";
    std::string dir(exe, size_t(n));
    for (int up = 0; up < 3; ++up)
        dir = dir.substr(0, dir.rfind('/'));
    return dir + "/tests/guests/bench";
}

// memcpy of kTouched bytes between two buffers already faulted in: best of three, MB/s.
double memcpy_mbps()
{
    std::vector<uint8_t> a(kTouched, 1), b(kTouched, 2);
    double best = 0;
    for (int i = 0; i < 3; ++i) {
        auto t = Clock::now();
        std::memcpy(b.data(), a.data(), a.size());
        double s = seconds_since(t);
        best = std::max(best, double(a.size()) / s / 1e6);
        a[size_t(i)] = b[size_t(i + 1)]; // the copies are used
    }
    return best;
}

double process_cpu_seconds()
{
    rusage u {};
    ::getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Loopback {
    double mbps {};
    double cpu_ns_per_byte {}; // both ends (kernel copies included), CPU time per byte carried
};

// One TCP connection over 127.0.0.1 carrying 1 GiB in 1 MiB writes, MB/s (sender's first byte
// to the receiver's last), and the CPU time both ends spent on it.
Loopback loopback_tcp()
{
    constexpr uint64_t kBytes = 1ull << 30;
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener, 1) != 0) {
        ::close(listener);
        return {};
    }
    socklen_t len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    std::promise<double> done;
    auto result = done.get_future();
    std::thread receiver([&] {
        int s = ::accept(listener, nullptr, nullptr);
        std::vector<uint8_t> buf(1 << 20);
        uint64_t got = 0;
        while (got < kBytes) {
            ssize_t n = ::read(s, buf.data(), buf.size());
            if (n <= 0)
                break;
            got += uint64_t(n);
        }
        ::close(s);
        done.set_value(double(got));
    });
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::vector<uint8_t> buf(1 << 20, 0x5A);
    double cpu = process_cpu_seconds();
    auto t = Clock::now();
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        for (uint64_t sent = 0; sent < kBytes;) {
            ssize_t n = ::write(s, buf.data(), buf.size());
            if (n <= 0)
                break;
            sent += uint64_t(n);
        }
    }
    ::close(s);
    double got = result.get();
    double secs = seconds_since(t);
    receiver.join();
    cpu = process_cpu_seconds() - cpu;
    ::close(listener);
    if (got <= 0)
        return {};
    return { got / secs / 1e6, cpu / got * 1e9 };
}

// The crypto ceiling of SEV migration on this host. Per 4 KiB packet the SEV API mandates, on
// each side, AES-128-CTR under the TEK and HMAC-SHA256 under the TIK over the ciphertext (SEV-KM
// API 55766 SEND_UPDATE_DATA / RECEIVE_UPDATE_DATA; firmware/cmd_migration.cpp), plus the memory
// controller's AES-XTS: the source's firmware reads the page through the guest's key (decrypt),
// the target's writes it through its key (encrypt). Timed here over 512 MiB in 4 KiB packets with
// OpenSSL (EVP HMAC-SHA256 and AES-128-CTR, keys set once, as firmware/crypto.cpp's
// TransportCrypto) and sevemu's own mmu::XtsCipher (as the memcrypt suite), giving CPU time per
// byte src = ctr + hmac + xts_decrypt and dst = ctr + hmac + xts_encrypt. Loopback TCP's own CPU
// time per byte (tcp, both ends, measured above) is added, and both sides share the host's N
// cores (std::thread::hardware_concurrency), while each side's firmware runs its commands one at
// a time on one thread (a PSP, and KVM's sev_cmd_mutex):
//     ceiling = min( N / (src + dst + tcp), 1 / src, 1 / dst )      [bytes of payload per second]
// scaled by the stream's bytes per page (the page, its packet header and record fields) so that
// it compares with the migration's throughput, which counts the stream's bytes. Everything else
// the emulator does per page (the KVM and PSP layers, copies, the stream) is overhead above it.
struct CryptoCeiling {
    double mbps {};
    double src_ns_per_byte {}, dst_ns_per_byte {};
    unsigned cores {};
};

CryptoCeiling crypto_ceiling(double tcp_cpu_ns_per_byte)
{
    constexpr size_t kBytes = 512u << 20, kPage = 4096;
    std::vector<uint8_t> buf(kBytes), out(kPage);
    for (size_t i = 0; i < kBytes; i += 8) {
        uint64_t v = (i * 0x9E3779B97F4A7C15ull) ^ (i >> 7);
        std::memcpy(buf.data() + i, &v, 8);
    }
    uint8_t tek[16], tik[16], iv[16], mac[32], xts_key[32];
    if (RAND_bytes(tek, 16) != 1 || RAND_bytes(tik, 16) != 1 || RAND_bytes(iv, 16) != 1 || RAND_bytes(xts_key, 32) != 1)
        return {};
    EVP_CIPHER_CTX* ctr = EVP_CIPHER_CTX_new();
    EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_MAC_CTX* mctx = hmac ? EVP_MAC_CTX_new(hmac) : nullptr;
    EVP_MAC_free(hmac);
    char digest[] = "SHA256";
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end() };
    auto xts = mmu::XtsCipher::create(std::span<uint8_t const>(xts_key, 32), mmu::best_aes_path());
    CryptoCeiling c;
    if (ctr && mctx && xts && EVP_EncryptInit_ex(ctr, EVP_aes_128_ctr(), nullptr, tek, nullptr) == 1
        && EVP_MAC_init(mctx, tik, 16, params) == 1) {
        bool ok = true;
        auto t = Clock::now();
        for (size_t off = 0; off < kBytes; off += kPage) {
            int len = 0, fin = 0;
            ok &= EVP_EncryptInit_ex(ctr, nullptr, nullptr, nullptr, iv) == 1
                && EVP_EncryptUpdate(ctr, out.data(), &len, buf.data() + off, int(kPage)) == 1
                && EVP_EncryptFinal_ex(ctr, out.data() + len, &fin) == 1;
        }
        double ctr_s = seconds_since(t);
        t = Clock::now();
        for (size_t off = 0; off < kBytes; off += kPage) {
            size_t len = 0;
            ok &= EVP_MAC_init(mctx, nullptr, 0, nullptr) == 1 && EVP_MAC_update(mctx, iv, 16) == 1
                && EVP_MAC_update(mctx, buf.data() + off, kPage) == 1 && EVP_MAC_final(mctx, mac, &len, sizeof mac) == 1;
        }
        double hmac_s = seconds_since(t);
        t = Clock::now();
        for (size_t off = 0; off < kBytes; off += kPage)
            (*xts)->decrypt_page(buf.data() + off, out.data(), off / kPage);
        double dec_s = seconds_since(t);
        t = Clock::now();
        for (size_t off = 0; off < kBytes; off += kPage)
            (*xts)->encrypt_page(out.data(), buf.data() + off, off / kPage);
        double enc_s = seconds_since(t);
        if (ok) {
            c.src_ns_per_byte = (ctr_s + hmac_s + dec_s) / double(kBytes) * 1e9;
            c.dst_ns_per_byte = (ctr_s + hmac_s + enc_s) / double(kBytes) * 1e9;
            c.cores = std::max(1u, std::thread::hardware_concurrency());
            double shared = double(c.cores) / (c.src_ns_per_byte + c.dst_ns_per_byte + tcp_cpu_ns_per_byte);
            double bytes_per_ns = std::min({ shared, 1.0 / c.src_ns_per_byte, 1.0 / c.dst_ns_per_byte });
            // A private page's record: u64 address, u8 kind, u32 length, u32 header length, the
            // 0x34-byte packet header (SEV-KM API 55766 §6.15) and the page.
            constexpr double kStreamBytesPerPage = 8 + 1 + 4 + 4 + 0x34 + 4096;
            c.mbps = bytes_per_ns * 1e3 * kStreamBytesPerPage / 4096.0;
        }
    }
    EVP_CIPHER_CTX_free(ctr);
    EVP_MAC_CTX_free(mctx);
    return c;
}

template <class R> R on(emulator::Machine& m, std::function<R(emulator::Machine&)> f)
{
    auto p = std::make_shared<std::promise<R>>();
    auto fut = p->get_future();
    m.post([p, f](emulator::Machine& mm) { p->set_value(f(mm)); });
    return fut.get();
}

struct Result {
    bool ok {};
    std::string error;
    emulator::MigrationInfo info;
    double cpu_seconds {}; // user + system time of this process from `migrate` to the end
};

// The address of symbol `name` in a 64-bit ELF's symbol table (the SEV idle guest's guest_main).
std::optional<uint64_t> elf_symbol(std::string const& path, std::string_view name)
{
    std::ifstream f(path, std::ios::binary);
    std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto rd = [&](uint64_t off, auto& v) {
        if (off + sizeof v > b.size())
            return false;
        std::memcpy(&v, b.data() + off, sizeof v);
        return true;
    };
    Elf64_Ehdr eh {};
    if (!rd(0, eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64)
        return std::nullopt;
    for (unsigned i = 0; i < eh.e_shnum; ++i) {
        Elf64_Shdr sh {}, strs {};
        if (!rd(eh.e_shoff + uint64_t(i) * eh.e_shentsize, sh) || sh.sh_type != SHT_SYMTAB
            || !rd(eh.e_shoff + uint64_t(sh.sh_link) * eh.e_shentsize, strs))
            continue;
        for (uint64_t off = sh.sh_offset; off + sizeof(Elf64_Sym) <= sh.sh_offset + sh.sh_size; off += sizeof(Elf64_Sym)) {
            Elf64_Sym sym {};
            if (!rd(off, sym) || strs.sh_offset + sym.st_name >= b.size())
                return std::nullopt;
            char const* n = reinterpret_cast<char const*>(b.data() + strs.sh_offset + sym.st_name);
            if (std::string_view(n, strnlen(n, b.size() - strs.sh_offset - sym.st_name)) == name)
                return sym.st_value;
        }
    }
    return std::nullopt;
}

// A temporary directory (an SEV machine's platform directory), removed with this object.
struct TempDir {
    std::string path;
    TempDir()
    {
        char tmpl[] = "/tmp/sevemu-bench-XXXXXX";
        if (char* p = ::mkdtemp(tmpl))
            path = p;
    }
    ~TempDir()
    {
        std::error_code ec;
        if (!path.empty())
            std::filesystem::remove_all(path, ec);
    }
};

Result migrate_guest(std::string const& kernel, bool sev, bool busy)
{
    TempDir src_platform, dst_platform;
    auto config = [&](std::string const& platform) {
        emulator::MachineConfig c;
        c.kernel = kernel;
        c.memory_size = kMachineMemory;
        c.serial.kind = emulator::SerialConfig::Kind::Callback;
        c.serial.callback = [](uint8_t) {};
        // An idle guest halts with nothing that can wake it: the machine stays up and sleeps
        // until a request comes, as `sevemu -no-shutdown` (QUIRKS.md), instead of ending the run.
        c.no_shutdown = true;
        if (sev) {
            // As tests/integration/migrate_sev.py runs it: policy 0x1 (NODBG), Milan's C-bit.
            emulator::SevGuestConfig g;
            g.id = "sev0";
            g.policy = 0x1;
            g.cbitpos = 51;
            g.reduced_phys_bits = 1;
            c.confidential_guest = g;
            c.platform_dir = platform;
        }
        return c;
    };
    if (sev && (src_platform.path.empty() || dst_platform.path.empty()))
        return { false, "cannot make the platform directories", {} };
    auto src = emulator::Machine::create(config(src_platform.path));
    if (!src)
        return { false, "source: " + src.error().message, {} };
    auto dst = emulator::Machine::create_incoming(config(dst_platform.path));
    if (!dst)
        return { false, "target: " + dst.error().message, {} };
    auto& sm = **src;
    auto& dm = **dst;
    // The guest's loop: idle `sti; hlt; jmp .-3` or busy `pause; jmp .-2`. A plain guest gets it
    // at its Multiboot entry; an SEV guest at guest_main, after sev_entry.S has turned on paging
    // with the C-bit and said KVM_MIGRATION_READY, written through the guest's key as the guest
    // itself would write it.
    uint8_t const halt[] = { 0xFB, 0xF4, 0xEB, 0xFD };
    uint8_t const pause[] = { 0xF3, 0x90, 0xEB, 0xFC };
    std::span<uint8_t const> spin = busy ? std::span<uint8_t const>(pause) : std::span<uint8_t const>(halt);
    uint64_t base = 0;
    auto key = mmu::KeyId::none();
    if (sev) {
        base = emulator::SevRuntime::kGuestRamBase;
        key = mmu::KeyId::slot(sm.sev()->asid());
        auto main = elf_symbol(kernel, "guest_main");
        if (!main || !sm.memory().write(Spa(base + *main), spin, key))
            return { false, "cannot place the idle loop at the SEV guest's guest_main", {} };
        // The target's PDH and chain, as its query-sev-capabilities and `sevemu-host export
        // --full` give them to migrate-set-sev-info.
        auto cap = dm.sev()->capabilities();
        if (!cap)
            return { false, "target: " + cap.error().message, {} };
        auto store = firmware::PlatformStore::open(dst_platform.path);
        if (!store)
            return { false, "target platform: " + store.error().message, {} };
        auto const& model = cpu_model_info(dm.config().cpu_model);
        auto chain = (*store)->amd_chain(dm.config().cpu_model, model.api_major, model.api_minor);
        if (!chain)
            return { false, "target platform: " + chain.error().message, {} };
        auto ask = chain->ask.serialize(), ark = chain->ark.serialize();
        Bytes amd = ask;
        amd.insert(amd.end(), ark.begin(), ark.end());
        if (auto r = sm.sev()->set_migration_target(cap->pdh, cap->cert_chain, amd); !r)
            return { false, "source: " + r.error().message, {} };
    } else if (!sm.multiboot() || !sm.memory().write(Spa(sm.multiboot()->entry), spin, key)) {
        return { false, "cannot place the idle loop at the guest's entry", {} };
    }
    // 512 MiB of pseudo-random bytes (xorshift64*), never a zero page; an SEV guest's private
    // memory (written through its key, so DRAM holds the ciphertext).
    std::vector<uint8_t> chunk(1 << 20);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t off = 0; off < kTouched; off += chunk.size()) {
        for (size_t i = 0; i < chunk.size(); i += 8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            uint64_t v = x * 0x2545F4914F6CDD1Dull;
            std::memcpy(chunk.data() + i, &v, 8);
        }
        if (!sm.memory().write(Spa(base + kTouchedBase + off), chunk, key))
            return { false, "cannot fill the guest's RAM", {} };
    }

    emulator::Migration smig(sm, nullptr), dmig(dm, nullptr);
    dmig.expect_incoming(false, true);
    if (auto r = dmig.start_incoming("tcp:127.0.0.1:0", false); !r)
        return { false, "target: " + r.error(), {} };
    auto port = dmig.info().socket_address->second;
    std::thread st([&] { sm.run(); });
    std::thread dt([&] { dm.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // the guest runs
    std::string uri = "tcp:127.0.0.1:" + std::to_string(port);
    double cpu_before = process_cpu_seconds();
    auto started = on<std::string>(sm, [&](emulator::Machine&) {
        auto r = smig.migrate(uri);
        return r ? std::string() : r.error();
    });
    Result out;
    if (!started.empty()) {
        out.error = "migrate: " + started;
    } else {
        for (;;) {
            auto info = on<emulator::MigrationInfo>(sm, [&](emulator::Machine&) { return smig.info(); });
            using S = emulator::MigrationStatus;
            if (info.status == S::Completed || info.status == S::Failed || info.status == S::Cancelled) {
                out.cpu_seconds = process_cpu_seconds() - cpu_before;
                out.info = info;
                out.ok = info.status == S::Completed;
                if (!out.ok)
                    out.error = info.error_desc.value_or("migration did not complete");
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    if (out.ok) {
        // The target runs the guest now.
        for (int i = 0; i < 200; ++i) {
            auto running = on<bool>(dm, [&](emulator::Machine& m) { return !m.paused() && !m.awaiting_snapshot(); });
            if (running)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    sm.post([](emulator::Machine& m) { m.quit(); });
    dm.post([](emulator::Machine& m) { m.quit(); });
    st.join();
    dt.join();
    smig.shutdown();
    dmig.shutdown();
    return out;
}

std::string fmt_ceiling(CryptoCeiling const& c)
{
    return "SEV crypto ceiling on " + std::to_string(c.cores) + (c.cores == 1 ? " core" : " cores");
}

} // namespace

int suite_migration(Report& report)
{
    std::string plain = guest_dir() + "/bench-trivial.elf", sev = guest_dir() + "/bench-trivial-sev.elf";
    for (auto const& k : { plain, sev }) {
        struct stat sb {};
        if (::stat(k.c_str(), &sb) != 0) {
            std::fprintf(stderr, "sevemu-bench migration: %s not found (build the tree, or set SEVEMU_BUILD_ROOT)\n", k.c_str());
            return 1;
        }
    }
    auto tcp = loopback_tcp();
    double copy = memcpy_mbps();
    std::string only_kind, only_guest;
    if (char const* o = std::getenv("SEVEMU_BENCH_MIGRATION_ONLY"); o && *o)
        only_kind = o; // "plain" or "sev" (for profiling)
    if (char const* o = std::getenv("SEVEMU_BENCH_MIGRATION_GUEST"); o && *o)
        only_guest = o; // "idle" or "busy"
    CryptoCeiling ceiling;
    if (only_kind != "plain") {
        ceiling = crypto_ceiling(tcp.cpu_ns_per_byte);
        if (ceiling.mbps <= 0) {
            std::fprintf(stderr, "sevemu-bench migration: OpenSSL could not time the SEV transport crypto\n");
            return 1;
        }
    }
    std::string const ceiling_name = fmt_ceiling(ceiling);
    for (bool is_sev : { false, true })
        for (bool busy : { false, true }) {
            if (!only_kind.empty() && only_kind != (is_sev ? "sev" : "plain"))
                continue;
            if (!only_guest.empty() && only_guest != (busy ? "busy" : "idle"))
                continue;
            auto r = migrate_guest(is_sev ? sev : plain, is_sev, busy);
            if (!r.ok) {
                std::fprintf(stderr, "sevemu-bench migration: the %s %s migration failed: %s\n", busy ? "busy" : "idle",
                    is_sev ? "SEV" : "plain", r.error.c_str());
                return 1;
            }
            auto const& i = r.info;
            double total_ms = double(i.total_time_ms.value_or(0));
            double mbps = i.ram ? double(i.ram->transferred) / (std::max(total_ms, 1.0) / 1000.0) / 1e6 : 0;
            std::string guest = busy ? "busy (spinning vCPU)" : "idle (HLT)";
            std::string name = is_sev ? "SEV, " + guest + ", 512 MiB private touched" : "plain, " + guest + ", 512 MiB touched";
            report.add({ "migration", name + ": total time", "ms", total_ms, "", 0, false });
            report.add({ "migration", name + ": throughput", "MB/s", mbps, "loopback TCP", tcp.mbps, true });
            report.add({ "migration", name + ": throughput", "MB/s", mbps, "memcpy", copy, true });
            if (is_sev)
                report.add({ "migration", name + ": throughput", "MB/s", mbps, ceiling_name, ceiling.mbps, true });
            report.add({ "migration", name + ": downtime", "ms", double(i.downtime_ms.value_or(0)), "downtime-limit 300 ms", 300, false });
            if (i.ram)
                report.add({ "migration", name + ": pre-copy passes (syncs)", "count", double(i.ram->dirty_sync_count), "", 0, true });
            // Both machines' threads (and a busy guest's spin), from `migrate` to "completed": on
            // a host shared with other work the wall-clock rows vary, this one much less.
            report.add({ "migration", name + ": CPU time, both sides", "ms", r.cpu_seconds * 1000.0, "", 0, false });
            if (std::getenv("SEVEMU_BENCH_DEBUG") && i.ram) // what the stream carried
                std::fprintf(stderr, "%s: %llu pages sent, %llu zero, %llu bytes\n", name.c_str(), (unsigned long long)i.ram->normal,
                    (unsigned long long)i.ram->duplicate, (unsigned long long)i.ram->transferred);
        }
    if (only_kind != "plain") {
        // The ceiling's parts, for the reader who wants to see where it comes from.
        report.add({ "migration", "SEV crypto per byte, source (CTR + HMAC + XTS decrypt)", "ns/B", ceiling.src_ns_per_byte, "", 0, false });
        report.add({ "migration", "SEV crypto per byte, target (CTR + HMAC + XTS encrypt)", "ns/B", ceiling.dst_ns_per_byte, "", 0, false });
        report.add({ "migration", "loopback TCP CPU per byte, both ends", "ns/B", tcp.cpu_ns_per_byte, "", 0, false });
        report.add({ "migration", ceiling_name, "MB/s", ceiling.mbps, "loopback TCP", tcp.mbps, true });
    }
    return 0;
}

} // namespace sevemu::bench
