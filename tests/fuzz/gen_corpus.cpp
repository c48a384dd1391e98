// sevemu fuzzing — writes the seed corpora that the project's own code makes: certificates
// signed with the fixed test keys, GODH certificates and session blobs for the fixed platform
// (fuzz_fixed.h), firmware command sequences with well-formed buffers, instruction bytes of
// every form, QMP sessions, and Multiboot images (the test guests given on the command line).
//
//   build/tests/fuzz/fuzz-gen-corpus tests/fuzz/corpus build/tests/guests/guest-elf32.elf ...
//
// Seeds are inputs in each harness's own format (see the comment at the top of fuzz_NAME.cpp).
// Run again only when a format changes; libFuzzer finds the rest from here.
#include "seed_writer.h"
#include "fuzz_fixed.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

using namespace sevemu;
using namespace sevemu::fuzz;
using test::TestPlatform;

namespace {

fs::path g_root;

void put(std::string const& harness, std::string const& name, Bytes const& data)
{
    fs::create_directories(g_root / harness);
    std::ofstream out(g_root / harness / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<char const*>(data.data()), std::streamsize(data.size()));
}

using W = SeedWriter;

void certs(Reference const& r)
{
    auto sev = [](SevCert const& c) { return W().u8(0).u16(0x1234).bytes(c.serialize()).b; };
    auto amd = [](Bytes const& c) { return W().u8(1).u16(0x0321).bytes(c).b; };
    put("certs", "sev-oca", sev(r.oca));
    put("certs", "sev-pek", sev(r.pek));
    put("certs", "sev-pdh", sev(r.pdh));
    put("certs", "sev-cek", sev(r.cek));
    put("certs", "sev-godh-unsigned", sev(r.godh));
    put("certs", "amd-ark", amd(r.ark.serialize()));
    put("certs", "amd-ask", amd(r.ask.serialize()));
    Bytes chain = r.ask.serialize();
    Bytes ark = r.ark.serialize();
    chain.insert(chain.end(), ark.begin(), ark.end());
    put("certs", "amd-ask-ark", amd(chain)); // SEND_START's "AMD certs": ASK || ARK
    Bytes bad = r.oca.serialize();
    bad[0] = 2; // version 2
    put("certs", "sev-bad-version", W().u8(0).u16(7).bytes(bad).b);
}

void session(Reference const& r)
{
    auto one = [&](std::string const& name, uint32_t policy, uint8_t flags, std::string godh, std::string blob,
                   uint16_t off, size_t ct_len) {
        W w;
        w.u32(policy).u8(flags).u16(uint16_t(godh.size())).text(godh).u16(uint16_t(blob.size())).text(blob).u16(off);
        PacketHeader h {};
        for (int i = 0; i < 16; ++i)
            h.iv[i] = uint8_t(0xA0 + i);
        w.raw(h);
        for (size_t i = 0; i < ct_len; ++i)
            w.u8(uint8_t(i * 31 + 7));
        put("session", name, w.b);
    };
    auto godh = to_base64(r.godh.serialize());
    auto blob = [](uint32_t p) { return to_base64(session_blob_bytes(reference_session(p))); };
    one("secret-ok", 0, 1, godh, blob(0), 0x100, 64);
    one("secret-nodbg", policy::NODBG, 1, godh, blob(policy::NODBG), 0, 16);
    one("secret-bad-mac", 0, 0, godh, blob(0), 0x40, 32);
    one("policy-changed", policy::NODBG, 1, godh, blob(0), 0, 16); // a blob made for policy 0
    // Line breaks in the files, as base64 tools write them (g_base64_decode skips them).
    std::string wrapped;
    for (size_t i = 0; i < godh.size(); i += 76)
        wrapped += godh.substr(i, 76) + "\n";
    one("wrapped-base64", 0, 1, wrapped, blob(0) + "\n", 0x200, 48);
    one("pdh-as-godh", 0, 1, to_base64(r.pdh.serialize()), blob(0), 0, 16);
    one("not-base64", 0, 1, "not base64!", blob(0), 0, 16);
}

// The data of a command that reads two objects: `a` at the data area, `b` 0x1000 above it.
Bytes two_at(std::span<uint8_t const> a, std::span<uint8_t const> b)
{
    Bytes data(0x1000 + b.size());
    std::copy(a.begin(), a.end(), data.begin());
    std::copy(b.begin(), b.end(), data.begin() + 0x1000);
    return data;
}

// One firmware command record: ID, buffer, data placed at 0x10000.
void cmd(W& w, CommandId id, auto const& buf, Bytes const& data = {})
{
    w.u8(uint8_t(id)).u8(uint8_t(sizeof buf)).raw(buf).u16(uint16_t(data.size())).bytes(data);
}

void firmware_seeds(Reference const& r)
{
    constexpr uint64_t D = TestPlatform::kData;
    constexpr uint64_t G = TestPlatform::kGuest;
    constexpr uint8_t kInit = 1, kEs = 2, kLaunched = 4, kSecret = 8, kRunning = 0x10;
    auto seq = [](uint8_t scene) { return W().u8(scene); };
    {
        auto w = seq(0);
        InitBuf b {};
        cmd(w, CommandId::INIT, b);
        put("firmware", "init", w.b);
    }
    {
        auto w = seq(0);
        InitExBuf b {};
        b.length = kInitExLength;
        b.nv_paddr = D;
        b.nv_length = kNvSize;
        cmd(w, CommandId::INIT_EX, b);
        put("firmware", "init-ex", w.b);
    }
    {
        auto w = seq(kInit);
        PlatformStatusBuf s {};
        cmd(w, CommandId::PLATFORM_STATUS, s);
        PekCsrBuf c { D, kSevCertSize };
        cmd(w, CommandId::PEK_CSR, c);
        PekCsrBuf q { D, 0 };
        cmd(w, CommandId::PEK_CSR, q);
        put("firmware", "status-csr", w.b);
    }
    {
        auto w = seq(kInit);
        PdhCertExportBuf b {};
        b.pdh_cert_paddr = D;
        b.pdh_cert_length = kSevCertSize;
        b.certs_paddr = D + 0x1000;
        b.certs_length = 3 * kSevCertSize;
        cmd(w, CommandId::PDH_CERT_EXPORT, b);
        GetIdBuf g { D + 0x4000, 128 };
        cmd(w, CommandId::GET_ID, g);
        put("firmware", "export-getid", w.b);
    }
    {
        // PEK_CERT_IMPORT of the reference PEK re-signed... by nothing: the OCA is ours. Exercises
        // the certificate checks with real certificates in DRAM.
        auto w = seq(kInit);
        PekCertImportBuf b {};
        b.pek_cert_paddr = D;
        b.pek_cert_length = kSevCertSize;
        b.oca_cert_paddr = D + 0x1000;
        b.oca_cert_length = kSevCertSize;
        cmd(w, CommandId::PEK_CERT_IMPORT, b, two_at(r.pek.serialize(), r.oca.serialize()));
        put("firmware", "pek-cert-import", w.b);
    }
    {
        auto w = seq(kInit);
        HandleBuf none {};
        w.u8(uint8_t(CommandId::PEK_GEN)).u8(0).u16(0);
        w.u8(uint8_t(CommandId::PDH_GEN)).u8(0).u16(0);
        w.u8(uint8_t(CommandId::DF_FLUSH)).u8(0).u16(0);
        w.u8(uint8_t(CommandId::SHUTDOWN)).u8(0).u16(0);
        w.u8(uint8_t(CommandId::PLATFORM_RESET)).u8(0).u16(0);
        cmd(w, CommandId::DECOMMISSION, none);
        put("firmware", "platform-cmds", w.b);
    }
    {
        auto w = seq(kInit);
        LaunchStartBuf s {};
        cmd(w, CommandId::LAUNCH_START, s);
        LaunchStartBuf sess {};
        sess.dh_cert_paddr = D;
        sess.dh_cert_len = kSevCertSize;
        sess.session_paddr = D + 0x1000;
        sess.session_len = kSessionBlobSize;
        cmd(w, CommandId::LAUNCH_START, sess, two_at(r.godh.serialize(), session_blob_bytes(reference_session(0))));
        put("firmware", "launch-start", w.b);
    }
    {
        auto w = seq(kInit | kLaunched);
        ActivateBuf a { 1, 100 };
        cmd(w, CommandId::ACTIVATE, a);
        LaunchUpdateBuf u {};
        u.handle = 1;
        u.paddr = G;
        u.length = 0x1000;
        cmd(w, CommandId::LAUNCH_UPDATE_DATA, u);
        LaunchMeasureBuf m {};
        m.handle = 1;
        m.measure_paddr = D;
        m.measure_len = 48;
        cmd(w, CommandId::LAUNCH_MEASURE, m);
        GuestStatusBuf g {};
        g.handle = 1;
        cmd(w, CommandId::GUEST_STATUS, g);
        put("firmware", "launch-flow", w.b);
    }
    {
        auto w = seq(kInit | kLaunched | kSecret);
        TransportBuf t {};
        t.handle = 1;
        t.hdr_paddr = D;
        t.hdr_len = kPacketHeaderSize;
        t.guest_paddr = G;
        t.guest_len = t.trans_len = 32;
        t.trans_paddr = D + 0x100;
        cmd(w, CommandId::LAUNCH_SECRET, t, Bytes(0x120, 0x11));
        HandleBuf f { 1 };
        cmd(w, CommandId::LAUNCH_FINISH, f);
        put("firmware", "secret-finish", w.b);
    }
    {
        auto w = seq(kInit | kLaunched | kSecret | kRunning);
        DebugBuf d {};
        d.handle = 1;
        d.src_paddr = G;
        d.dst_paddr = D;
        d.length = 64;
        cmd(w, CommandId::DBG_DECRYPT, d);
        d.src_paddr = D;
        d.dst_paddr = G + 0x40;
        cmd(w, CommandId::DBG_ENCRYPT, d);
        AttestationBuf at {};
        at.handle = 1;
        at.paddr = D + 0x1000;
        at.length = kAttestationReportSize;
        cmd(w, CommandId::ATTESTATION, at);
        CopyBuf c {};
        c.handle = 1;
        c.length = 0x1000;
        c.src_paddr = G;
        c.dst_paddr = G + 0x2000;
        cmd(w, CommandId::COPY, c);
        HandleBuf h { 1 };
        cmd(w, CommandId::DEACTIVATE, h);
        cmd(w, CommandId::DECOMMISSION, h);
        put("firmware", "running-guest", w.b);
    }
    {
        auto w = seq(kInit | kEs | kLaunched);
        ActivateExBuf a {};
        a.ex_len = kActivateExLength;
        a.handle = 1;
        a.asid = 1;
        cmd(w, CommandId::ACTIVATE_EX, a);
        LaunchUpdateBuf u {};
        u.handle = 1;
        u.paddr = G;
        u.length = kVmsaSize;
        cmd(w, CommandId::LAUNCH_UPDATE_VMSA, u);
        put("firmware", "es-guest", w.b);
    }
}

void decoder()
{
    // Per mode (0 = 16-bit, 1 = 32-bit, 2 = 64-bit): prefixes, ModRM/SIB/displacement forms,
    // immediates of each size, 0F/0F38/0F3A maps, VEX, x87, string ops, far/near branches.
    static char const* const kCode[] = {
        "90 01 d8 8b 04 24 8b 44 24 08 8b 84 24 00 01 00 00 8b 05 78 56 34 12 c6 00 7f 66 c7 00 34 12 "
        "c7 80 00 10 00 00 78 56 34 12 81 c3 00 00 01 00 83 c0 ff 48 8b 04 c5 00 00 00 00",
        "f3 a4 f2 ae 66 a5 f0 0f b1 0b 2e 3e 26 64 65 36 8b 00 67 8b 00 0f 05 0f a2 0f 01 d9 0f 20 c0 "
        "0f 22 d8 0f 32 0f 30 cd 80 cc e8 00 00 00 00 e9 00 00 00 00 eb fe 74 00 0f 84 00 00 00 00",
        "66 0f 6f 00 f3 0f 6f 00 0f 28 c1 66 0f 3a 40 c1 ff 66 0f 38 00 c1 c5 f9 6f 00 c4 e2 79 18 00 "
        "d9 c0 dd 04 24 df e0 d8 c1 de f9 9b db e3 0f ae 00 0f ae 08 0f c7 08 48 0f c7 08",
        "c2 08 00 c3 ca 08 00 cb cf 9a 00 00 00 00 08 00 ea 00 00 00 00 08 00 ff 18 ff 28 ff d0 "
        "c8 10 00 01 c9 6a ff 68 78 56 34 12 f6 f1 f7 f9 48 f7 f9 69 c0 00 01 00 00 6b c0 10",
        "48 b8 88 77 66 55 44 33 22 11 49 89 c0 4d 8b 04 24 4e 8b 04 25 00 00 00 00 41 ff e7 "
        "40 88 f0 0f 0d 00 0f 1f 44 00 00 66 2e 0f 1f 84 00 00 00 00 00 f3 0f bc c0 f3 0f b8 c0",
        "66 66 66 66 66 66 66 66 66 66 66 66 66 66 90 0f 0b 0f ff c4 c4 8f 8f",
    };
    int n = 0;
    for (uint8_t mode = 0; mode < 3; ++mode)
        for (char const* text : kCode) {
            auto b = from_hex(text);
            Bytes in { mode };
            in.insert(in.end(), b->begin(), b->end());
            put("decoder", "mode" + std::to_string(mode) + "-" + std::to_string(n++ % 6), in);
        }
}

void qmp()
{
    auto s = [](std::string name, std::string text, uint8_t cut = 0) {
        Bytes b { cut };
        b.insert(b.end(), text.begin(), text.end());
        put("qmp", name, b);
    };
    std::string caps = "{\"execute\": \"qmp_capabilities\"}\r\n";
    s("session", caps + "{\"execute\":\"query-status\",\"id\":1}\n{\"execute\":\"stop\"}\n{\"execute\":\"quit\",\"id\":\"q\"}\n", 3);
    s("before-caps", "{\"execute\":\"query-status\"}\n" + caps + "{\"execute\":\"query-status\"}\n", 7);
    s("arguments", caps + "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":4096,\"size\":64,\"filename\":\"/tmp/x\"},\"id\":[1,{\"a\":null}]}\n"
        "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":\"x\",\"size\":64}}\n"
        "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info registers\",\"cpu-index\":0}}\n"
        "{\"execute\":\"system_reset\",\"arguments\":{\"force\":true,\"reason\":\"\"}}\n", 1);
    s("malformed", caps + "{\"execute\": tru}\n}\n]\n42\n\"str\"\n{\"execute\":\"quit\",\"bogus\":1}\n"
        "{\"execute\":\"query-status\",\"execute\":\"quit\"}\n{\"exec\n{\"execute\":\"query-status\"}\n", 5);
    s("strings", caps + "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"a\\\"b\\\\c\\u00e9\\n\"},\"id\":\"\\u0041\"}\n"
        "{\"execute\":\"nope\",\"id\":{\"deep\":[[[[{}]]]]}}\n", 2);
    s("capabilities-oob", "{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\n" + caps + caps, 11);
}

// A small a.out-kludge Multiboot image (spec §3.1.1): header at 0x40, loaded at 1 MiB, bss after.
Bytes kludge_image()
{
    Bytes f(0x300, 0x90);
    auto put32 = [&](size_t off, uint32_t v) {
        for (int i = 0; i < 4; ++i)
            f[off + i] = uint8_t(v >> (8 * i));
    };
    uint32_t flags = 0x10003;
    put32(0x40, 0x1BADB002);
    put32(0x44, flags);
    put32(0x48, uint32_t(0u - 0x1BADB002u - flags));
    put32(0x4C, 0x100040);     // header_addr
    put32(0x50, 0x100000);     // load_addr
    put32(0x54, 0x100300);     // load_end_addr
    put32(0x58, 0x101300);     // bss_end_addr
    put32(0x5C, 0x100060);     // entry_addr
    return f;
}

void multiboot(int argc, char** argv)
{
    Bytes k { 3 };
    auto img = kludge_image();
    k.insert(k.end(), img.begin(), img.end());
    put("multiboot", "aout-kludge", k);
    for (int i = 2; i < argc; ++i) {
        std::ifstream in(argv[i], std::ios::binary);
        Bytes b { uint8_t(i & 3) };
        b.insert(b.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        put("multiboot", fs::path(argv[i]).filename().string(), b);
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR [MULTIBOOT_GUEST.elf...]\n", argv[0]);
        return 2;
    }
    g_root = argv[1];
    auto ref = make_reference();
    certs(ref);
    session(ref);
    firmware_seeds(ref);
    decoder();
    qmp();
    multiboot(argc, argv);
    std::printf("seed corpora written under %s\n", argv[1]);
    return 0;
}
