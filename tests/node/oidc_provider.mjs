// A real OpenID Provider for the broker's login tests: panva's certified `oidc-provider` (npm)
// on a free loopback port, with its development interactions (a plain HTML login form and a
// consent form, which a plain HTTP client can post).
//
//   node oidc_provider.mjs        (configuration in the environment, see below)
//
//   OIDC_CLIENTS  JSON list of {client_id, client_secret, redirect_uris} registered statically
//
// It prints "oidc-provider listening on http://127.0.0.1:PORT" once it serves; the issuer is
// that URL. PKCE (S256) is required of every client. The accounts below log in with any
// password. A test-only control route, POST /__test__/tamper?mode=MODE, makes the token
// endpoint hand out damaged ID tokens until it is called again with mode= (empty):
//
//   alter   another `sub` in the payload, the original signature kept
//   resign  another `sub`, signed with a key that is not the provider's (same kid)
//   aud     signed by the provider's key, for another client
//   iss     signed by the provider's key, naming another issuer
//   exp     signed by the provider's key, expired an hour ago
//   nonce   signed by the provider's key, with another nonce
import * as crypto from "node:crypto";
import * as http from "node:http";

import Provider from "oidc-provider";

const ACCOUNTS = {
  ada: {
    email: "ada@uni.example",
    email_verified: true,
    name: "Ada Lovelace",
    eduperson_scoped_affiliation: ["member@uni.example", "staff@other.example"],
  },
  bob: {
    email: "bob@elsewhere.example",
    email_verified: true,
    name: "Bob Builder",
    eduperson_scoped_affiliation: ["student@uni.example"],
  },
  eve: {
    email: "eve@uni.example",
    email_verified: false,
    name: "Eve Unverified",
    eduperson_scoped_affiliation: [],
  },
};

// The provider's signing key is made here (not by oidc-provider) so that the tamper modes can
// sign well-formed tokens with wrong claims: the broker must refuse them for the claims alone.
const KID = "test-key-1";
const signingKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
const strangerKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
const signingJwk = { ...signingKey.export({ format: "jwk" }), kid: KID, alg: "RS256", use: "sig" };

let tamper = "";

const b64url = (data) => Buffer.from(data).toString("base64url");
const decodePart = (part) => JSON.parse(Buffer.from(part, "base64url").toString());

function sign(header, payload, key) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = crypto.sign("sha256", Buffer.from(input), key);
  return `${input}.${b64url(signature)}`;
}

function damaged(idToken, mode) {
  const [headerPart, payloadPart, signaturePart] = idToken.split(".");
  const header = decodePart(headerPart);
  const payload = decodePart(payloadPart);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case "alter":
      return `${headerPart}.${b64url(JSON.stringify({ ...payload, sub: "mallory" }))}.${signaturePart}`;
    case "resign":
      return sign(header, { ...payload, sub: "mallory" }, strangerKey);
    case "aud":
      return sign(header, { ...payload, aud: "another-client", azp: "another-client" }, signingKey);
    case "iss":
      return sign(header, { ...payload, iss: "https://idp.elsewhere.example" }, signingKey);
    case "exp":
      return sign(header, { ...payload, iat: now - 7200, exp: now - 3600 }, signingKey);
    case "nonce":
      return sign(header, { ...payload, nonce: "not-the-broker-nonce" }, signingKey);
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const clients = JSON.parse(process.env.OIDC_CLIENTS || "[]").map((client) => ({
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...client,
  }));
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signingJwk] },
    cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
    pkce: { required: () => true },
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name"],
      eduperson_scoped_affiliation: ["eduperson_scoped_affiliation"],
    },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, sub) {
      if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...ACCOUNTS[sub] }) };
    },
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === "/__test__/tamper" && ctx.method === "POST") {
      tamper = ctx.query.mode || "";
      ctx.body = { tamper };
      return;
    }
    await next();
    if (tamper && ctx.path === "/token" && ctx.body && ctx.body.id_token) {
      ctx.body = { ...ctx.body, id_token: damaged(ctx.body.id_token, tamper) };
    }
  });

  server.on("request", provider.callback());
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
