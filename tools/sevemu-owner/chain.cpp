// Certificate chain as the guest owner checks it before trusting a platform's PDH
// (AMD-ASPFW sev_cert.c sev_cert_validate; the checks themselves are firmware/cert_chain.cpp, shared with the
// firmware's SEND_START so both sides apply one rule set).
#include "tools/sevemu-owner/owner.h"

#include <system_error>

namespace sevemu::owner {

using namespace sevemu::firmware;

static OwnerResult<SevCert> load_sev_cert(std::filesystem::path const& path)
{
    Bytes b = TRY(read_file(path, file_limits::kSevCert));
    auto cert = SevCert::parse(b);
    if (!cert)
        return make_unexpected(OwnerError { path.filename().string() + ": not a valid SEV certificate ("
            + std::string(cert_error_name(cert.error())) + ")" });
    return std::move(cert).value();
}

static OwnerResult<AmdCert> load_amd_cert(std::filesystem::path const& path)
{
    Bytes b = TRY(read_file(path, file_limits::kAmdCert));
    auto cert = AmdCert::parse(b);
    if (!cert)
        return make_unexpected(OwnerError { path.filename().string() + ": not a valid AMD ARK/ASK certificate ("
            + std::string(cert_error_name(cert.error())) + ")" });
    return std::move(cert).value();
}

OwnerResult<SevChain> load_chain_dir(std::filesystem::path const& dir)
{
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
        return make_unexpected(OwnerError { dir.string() + ": not a directory" });
    auto pdh = TRY(load_sev_cert(dir / "pdh.cert"));
    auto pek = TRY(load_sev_cert(dir / "pek.cert"));
    auto oca = TRY(load_sev_cert(dir / "oca.cert"));
    SevChain chain { std::nullopt, std::nullopt, std::nullopt, std::move(oca), std::move(pek), std::move(pdh) };
    if (std::filesystem::exists(dir / "cek.cert", ec))
        chain.cek = TRY(load_sev_cert(dir / "cek.cert"));
    if (std::filesystem::exists(dir / "ask.cert", ec))
        chain.ask = TRY(load_amd_cert(dir / "ask.cert"));
    if (std::filesystem::exists(dir / "ark.cert", ec))
        chain.ark = TRY(load_amd_cert(dir / "ark.cert"));
    return chain;
}

OwnerResult<ChainReport> verify_chain_dir(std::filesystem::path const& dir, bool require_amd)
{
    auto chain = TRY(load_chain_dir(dir));
    if (require_amd) {
        for (char const* name : { "cek.cert", "ask.cert", "ark.cert" }) {
            std::error_code ec;
            if (!std::filesystem::exists(dir / name, ec))
                return make_unexpected(OwnerError { (dir / name).string() + ": missing (needed to root the chain at AMD's ARK)" });
        }
    }
    auto report = verify_chain(chain, require_amd);
    if (!report)
        return make_unexpected(OwnerError { "certificate chain invalid: " + report.error().message() });
    return std::move(report).value();
}

} // namespace sevemu::owner
