#!/bin/sh
# Secrets of the compose stack, made once into $1 (default /secrets; compose mounts deploy/.secrets):
# a CA, Kafka's certificate (kafka, localhost, 127.0.0.1), random SASL passwords for the users
# "admin" (the broker itself, topic-init) and "kinfer" (the workers), Kafka's JAAS file, a
# client.properties for Kafka's command-line tools, and the gateway's bearer token
# (gateway.token, and gateway-tokens.json for KINFER_GATEWAY_TOKENS_FILE). Existing files are kept, so a restart keeps
# its passwords. Development only: the files are readable by every user (the Kafka and kinfer
# containers run as different uids); use Kubernetes secrets in production.
set -eu
out="${1:-/secrets}"
mkdir -p "$out"
cd "$out"
# the gateway's bearer token (KINFER_GATEWAY_TOKENS_FILE): made on its own, so that a stack
# made before the gateway existed gets one too
if [ ! -s gateway-tokens.json ]; then
  umask 022
  openssl rand -hex 24 > gateway.token
  printf '{"tokens": [{"name": "compose", "token": "%s", "models": ["*"]}]}\n' \
    "$(cat gateway.token)" > gateway-tokens.json
  chmod 644 gateway.token gateway-tokens.json
fi
if [ -s client.properties ]; then
  echo "secrets already in $out: kept"
  exit 0
fi
umask 022
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 825 \
  -subj "/CN=kinfer compose CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -keyout kafka.key -out kafka.csr -subj "/CN=kafka"
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth,clientAuth" \
  "subjectAltName=DNS:kafka,DNS:localhost,IP:127.0.0.1" > kafka.ext
openssl x509 -req -in kafka.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
  -extfile kafka.ext -out kafka.crt
# Kafka's PEM keystore: the (PKCS#8, unencrypted) private key, then the certificate chain
cat kafka.key kafka.crt ca.pem > kafka.pem
openssl rand -hex 24 > admin.password
openssl rand -hex 24 > kinfer.password
admin="$(cat admin.password)"
kinfer="$(cat kinfer.password)"
cat > kafka_server_jaas.conf <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin" password="$admin"
  user_admin="$admin"
  user_kinfer="$kinfer";
};
JAAS
cat > client.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin";
ssl.truststore.type=PEM
ssl.truststore.location=$out/ca.pem
PROPS
rm -f kafka.csr kafka.ext ca.srl
chmod 600 ca.key
chmod 644 ca.pem kafka.key kafka.crt kafka.pem admin.password kinfer.password \
  kafka_server_jaas.conf client.properties
echo "secrets made in $out"
