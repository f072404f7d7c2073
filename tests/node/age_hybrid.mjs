// Interop peer for tests/age: the age-encryption reference JS library (npm), hybrid keys.
//
//   node age_hybrid.mjs keygen             -> prints {"identity": ..., "recipient": ...} as JSON
//   node age_hybrid.mjs recipient          -> prints the recipient of $AGE_IDENTITY
//   node age_hybrid.mjs encrypt <recipient>... < plaintext > age file
//   node age_hybrid.mjs decrypt            < age file > plaintext   (identity in $AGE_IDENTITY)
//
// Identities travel in the environment, not argv, so they do not show up in process lists.
import { Decrypter, Encrypter, generateHybridIdentity, identityToRecipient } from "age-encryption";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}

function writeStdout(bytes) {
  return new Promise((resolve, reject) =>
    process.stdout.write(bytes, (err) => (err ? reject(err) : resolve())),
  );
}

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case "keygen": {
    const identity = await generateHybridIdentity();
    const recipient = await identityToRecipient(identity);
    await writeStdout(JSON.stringify({ identity, recipient }) + "\n");
    break;
  }
  case "recipient": {
    await writeStdout((await identityToRecipient(process.env.AGE_IDENTITY)) + "\n");
    break;
  }
  case "encrypt": {
    const e = new Encrypter();
    for (const r of args) e.addRecipient(r);
    await writeStdout(await e.encrypt(await readStdin()));
    break;
  }
  case "decrypt": {
    const d = new Decrypter();
    d.addIdentity(process.env.AGE_IDENTITY);
    await writeStdout(await d.decrypt(await readStdin()));
    break;
  }
  default:
    process.stderr.write(`unknown command ${command}\n`);
    process.exit(2);
}
