#include "common/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace fairwatch {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const v1::TlsConfig& tls, bool insecure_plaintext) {
  if (tls.cert_file().empty() && tls.key_file().empty()) {
    if (!insecure_plaintext) {
      return absl::InvalidArgumentError(
          "no TLS certificate configured (tls.cert_file, tls.key_file); set insecure_plaintext "
          "(or pass --insecure-plaintext) to serve without TLS");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file().empty() || tls.key_file().empty()) {
    return absl::InvalidArgumentError("tls.cert_file and tls.key_file must be set together");
  }
  grpc::SslServerCredentialsOptions options(
      tls.require_client_cert() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadFileToString(tls.cert_file()));
  ASSIGN_OR_RETURN(pair.private_key, ReadFileToString(tls.key_file()));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca_file().empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(tls.ca_file()));
  } else if (tls.require_client_cert()) {
    return absl::InvalidArgumentError(
        "tls.require_client_cert needs tls.ca_file to verify clients");
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const v1::TlsConfig& tls, bool insecure_plaintext) {
  if (insecure_plaintext) {
    if (!tls.cert_file().empty() || !tls.ca_file().empty()) {
      return absl::InvalidArgumentError("insecure_plaintext and tls settings are exclusive");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file().empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(tls.ca_file()));
  }
  if (!tls.cert_file().empty() || !tls.key_file().empty()) {
    if (tls.cert_file().empty() || tls.key_file().empty()) {
      return absl::InvalidArgumentError("tls.cert_file and tls.key_file must be set together");
    }
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFileToString(tls.cert_file()));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadFileToString(tls.key_file()));
  }
  return grpc::SslCredentials(options);
}

}  // namespace fairwatch
