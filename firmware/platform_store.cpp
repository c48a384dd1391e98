#include "firmware/platform_store.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sevemu::firmware {

namespace fs = std::filesystem;

namespace {

StoreError io_error(fs::path const& p, std::string_view what, int err = errno)
{
    return { StoreError::Kind::Io, p.string() + ": " + std::string(what) + (err ? std::string(": ") + std::strerror(err) : "") };
}

// fs::exists without the exception: an inaccessible path is an error value, not "absent".
Result<bool, StoreError> present(fs::path const& p)
{
    std::error_code ec;
    bool e = fs::exists(p, ec);
    if (ec)
        return make_unexpected(StoreError { StoreError::Kind::Io, p.string() + ": cannot access: " + ec.message() });
    return e;
}

// base/file_io.h's atomic write, with the store's error type (files in DIR are secrets: 0600).
Result<void, StoreError> write_atomic(fs::path const& path, std::span<const uint8_t> data)
{
    auto r = write_file_atomic(path, data, 0600);
    if (!r)
        return make_unexpected(StoreError { StoreError::Kind::Io, std::move(r).error().message });
    return {};
}

// Holds flock(LOCK_EX) on DIR/lock for its lifetime. The lock is advisory, between sevemu
// processes: it serialises identity creation, NV updates and root generation.
class DirLock {
public:
    static Result<DirLock, StoreError> take(fs::path const& dir)
    {
        fs::path p = dir / "lock";
        int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return make_unexpected(io_error(p, "cannot open lock file"));
        while (::flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                auto e = io_error(p, "cannot lock");
                ::close(fd);
                return make_unexpected(e);
            }
        }
        return DirLock(fd);
    }
    DirLock(DirLock&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
    DirLock& operator=(DirLock&&) = delete;
    ~DirLock()
    {
        if (m_fd >= 0) {
            ::flock(m_fd, LOCK_UN);
            ::close(m_fd);
        }
    }

private:
    explicit DirLock(int fd) : m_fd(fd) {}
    int m_fd { -1 };
};

char model_digit(CpuModel m) { return char('0' + unsigned(m)); }

// roots/<product>: AMD's product name in lower case, as virtee/sev names its builtin/ folders.
std::string model_dir_name(CpuModel m)
{
    std::string dir(cpu_model_info(m).amd_product);
    for (char& c : dir)
        c = char(std::tolower(static_cast<unsigned char>(c)));
    return dir;
}

// virtee/sev src/certs/sev/builtin/*/ark.cert: Naples roots are RSA-2048 (SHA-256), Rome and later RSA-4096
// (SHA-384).
unsigned root_bits(CpuModel m) { return cpu_model_info(m).amd_root_bits; }

Result<Bytes, StoreError> key_to_pem(EVP_PKEY* key, fs::path const& p)
{
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr)) {
        BIO_free(bio);
        return make_unexpected(StoreError { StoreError::Kind::Crypto, p.string() + ": cannot encode key" });
    }
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    Bytes out(data, data + n);
    BIO_free(bio);
    return out;
}

Result<PKey, StoreError> key_from_pem(Bytes const& pem, fs::path const& p)
{
    BIO* bio = BIO_new_mem_buf(pem.data(), int(pem.size()));
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    if (!key || !is_rsa(key)) {
        PKey drop(key);
        return make_unexpected(StoreError { StoreError::Kind::Corrupt, p.string() + ": not an RSA private key" });
    }
    return PKey(key);
}

} // namespace

Result<Bytes, StoreError> read_file(fs::path const& path, uint64_t max_size)
{
    auto r = read_regular_file(path, max_size);
    if (!r)
        return make_unexpected(StoreError { StoreError::Kind::Io, std::move(r).error().message });
    return std::move(*r);
}

fs::path PlatformStore::default_dir()
{
    if (char const* p = std::getenv("SEVEMU_PLATFORM"); p && *p)
        return p;
    if (char const* x = std::getenv("XDG_DATA_HOME"); x && *x)
        return fs::path(x) / "sevemu" / "platform";
    char const* home = std::getenv("HOME");
    return fs::path(home && *home ? home : ".") / ".local" / "share" / "sevemu" / "platform";
}

PlatformStore::~PlatformStore() { secure_zero(m_cuk.data(), m_cuk.size()); }

Result<std::unique_ptr<PlatformStore>, StoreError> PlatformStore::open(fs::path const& dir)
{
    if (dir.empty())
        return make_unexpected(StoreError { StoreError::Kind::Io, "the platform directory name is empty" });
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir, ec))
        return make_unexpected(StoreError { StoreError::Kind::Io, dir.string() + ": cannot create platform directory" + (ec ? ": " + ec.message() : "") });
    std::unique_ptr<PlatformStore> store(new PlatformStore(dir));
    auto lock = TRY(DirLock::take(dir));
    // A process killed while writing (kill -9, power loss) leaves DIR/.NAME.tmp.PID behind:
    // the rename never happened, so the file is litter. Under the lock, and only when its
    // writer is gone (sevemu-host's init_ex_nv.bin is written without the lock).
    remove_stale_temp_files(dir);
    for (auto it = fs::directory_iterator(dir / "roots", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
        if (it->is_directory(ec))
            remove_stale_temp_files(it->path());
    ec.clear();
    fs::path id_path = dir / "chip.id";
    if (!TRY(present(id_path))) {
        // First use: "fuse" a fresh chip-unique key.
        if (!random_bytes(store->m_cuk))
            return make_unexpected(StoreError { StoreError::Kind::Crypto, "cannot generate the chip-unique key" });
        std::string text = "# sevemu emulated chip: fused secrets (not an AMD part)\nversion 1\ncuk " + to_hex(store->m_cuk) + "\n";
        TRY(write_atomic(id_path, std::span(reinterpret_cast<uint8_t const*>(text.data()), text.size())));
        secure_zero(text.data(), text.size());
        return store;
    }
    Bytes raw = TRY(read_file(id_path, file_limits::kSmallText));
    std::string_view text(reinterpret_cast<char const*>(raw.data()), raw.size());
    auto at = text.find("\ncuk ");
    std::optional<Bytes> cuk;
    if (at != std::string_view::npos)
        cuk = from_hex(text.substr(at + 5, 64));
    secure_zero(raw.data(), raw.size());
    if (!cuk || cuk->size() != store->m_cuk.size())
        return make_unexpected(StoreError { StoreError::Kind::Corrupt, id_path.string() + ": damaged chip identity (no 'cuk' line of 64 hex digits)" });
    std::copy(cuk->begin(), cuk->end(), store->m_cuk.begin());
    secure_zero(cuk->data(), cuk->size());
    return store;
}

Result<Bytes, StoreError> PlatformStore::read_nv() const
{
    auto lock = TRY(DirLock::take(m_dir));
    fs::path p = m_dir / "nv.bin";
    if (!TRY(present(p)))
        return nv_erased_image();
    auto r = read_regular_file(p, file_limits::kNvState);
    if (!r && r.error().kind == FileError::Kind::TooLarge)
        return Bytes {}; // not an NV image: damaged data, which INIT erases (cmd_platform.cpp)
    if (!r)
        return make_unexpected(StoreError { StoreError::Kind::Io, std::move(r).error().message });
    return std::move(*r);
}

Result<void, StoreError> PlatformStore::write_nv(std::span<const uint8_t> image) const
{
    auto lock = TRY(DirLock::take(m_dir));
    return write_atomic(m_dir / "nv.bin", image);
}

Result<void, StoreError> PlatformStore::erase_nv() const
{
    Bytes erased = nv_erased_image();
    return write_nv(erased);
}

AmdKeyId PlatformStore::test_key_id(CpuModel model, AmdKeyUsage usage)
{
    AmdKeyId id {};
    std::string tag = std::string("sevemu-test-") + (usage == AmdKeyUsage::ARK ? "ARK" : "ASK");
    std::memcpy(id.data(), tag.data(), tag.size()); // 15 bytes
    id[15] = uint8_t(model_digit(model));
    return id;
}

Result<AmdChain, StoreError> PlatformStore::amd_chain(CpuModel model, uint8_t api_major, uint8_t api_minor) const
{
    auto lock = TRY(DirLock::take(m_dir));
    fs::path dir = m_dir / "roots" / model_dir_name(model);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        return make_unexpected(io_error(dir, "cannot create", ec.value()));
    auto crypto_err = [&](std::string what) { return StoreError { StoreError::Kind::Crypto, dir.string() + ": " + what }; };
    auto corrupt = [&](fs::path const& p, CertError e) {
        return StoreError { StoreError::Kind::Corrupt, p.string() + ": " + std::string(cert_error_name(e)) };
    };

    // ARK and ASK: generate once (slow for RSA-4096), then reuse.
    if (!TRY(present(dir / "ask.cert")) || !TRY(present(dir / "ark.cert")) || !TRY(present(dir / "ask.pem"))) {
        unsigned bits = root_bits(model);
        auto ark_key = rsa_generate(bits);
        auto ask_key = rsa_generate(bits);
        if (!ark_key || !ask_key)
            return make_unexpected(crypto_err("cannot generate the test root keys"));
        AmdKeyId ark_id = test_key_id(model, AmdKeyUsage::ARK);
        AmdKeyId ask_id = test_key_id(model, AmdKeyUsage::ASK);
        auto ark = AmdCert::build(AmdKeyUsage::ARK, ark_id, ark_id, ark_key->get());
        auto ask = AmdCert::build(AmdKeyUsage::ASK, ask_id, ark_id, ask_key->get());
        if (!ark || !ask || !ark->sign(ark_key->get()) || !ask->sign(ark_key->get()))
            return make_unexpected(crypto_err("cannot sign the test root certificates"));
        TRY(write_atomic(dir / "ark.pem", TRY(key_to_pem(ark_key->get(), dir / "ark.pem"))));
        TRY(write_atomic(dir / "ask.pem", TRY(key_to_pem(ask_key->get(), dir / "ask.pem"))));
        TRY(write_atomic(dir / "ark.cert", ark->serialize()));
        TRY(write_atomic(dir / "ask.cert", ask->serialize()));
        fs::remove(dir / "cek.cert", ec);
    }
    auto ark = AmdCert::parse(TRY(read_file(dir / "ark.cert", file_limits::kAmdCert)));
    if (!ark)
        return make_unexpected(corrupt(dir / "ark.cert", ark.error()));
    auto ask = AmdCert::parse(TRY(read_file(dir / "ask.cert", file_limits::kAmdCert)));
    if (!ask)
        return make_unexpected(corrupt(dir / "ask.cert", ask.error()));

    // The CEK certificate, signed by the ASK (what AMD's KDS would serve for this chip).
    fs::path cek_path = dir / "cek.cert";
    if (TRY(present(cek_path))) {
        auto cek = SevCert::parse(TRY(read_file(cek_path, file_limits::kSevCert)));
        if (cek && cek->api_major() == api_major && cek->api_minor() == api_minor)
            return AmdChain { std::move(*ark), std::move(*ask), std::move(*cek) };
    }
    auto ask_key = TRY(key_from_pem(TRY(read_file(dir / "ask.pem", file_limits::kPem)), dir / "ask.pem"));
    auto cek_key = derive_cek(m_cuk);
    if (!cek_key)
        return make_unexpected(crypto_err("cannot derive the CEK"));
    auto cek = SevCert::make_ec(api_major, api_minor, SevUsage::CEK, SevAlgo::ECDSA_SHA256, cek_key->get());
    if (!cek)
        return make_unexpected(crypto_err("cannot build the CEK certificate"));
    auto signer = ask->as_signer();
    if (!signer)
        return make_unexpected(corrupt(dir / "ask.cert", signer.error()));
    signer->key = std::move(ask_key);
    if (!cek->sign(0, *signer))
        return make_unexpected(crypto_err("cannot sign the CEK with the ASK"));
    TRY(write_atomic(cek_path, cek->serialize()));
    return AmdChain { std::move(*ark), std::move(*ask), std::move(*cek) };
}

} // namespace sevemu::firmware
