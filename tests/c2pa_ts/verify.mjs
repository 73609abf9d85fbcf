// Second, independent C2PA reader (pure TypeScript, not c2pa-rs): validate files, print JSON.
import * as fs from 'node:fs/promises';
import { BMFF, JPEG, PNG } from '@trustnxt/c2pa-ts/asset';
import { SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ManifestStore, ValidationResult } from '@trustnxt/c2pa-ts/manifest';

const out = [];
for (const file of process.argv.slice(2)) {
  const buf = new Uint8Array(await fs.readFile(file));
  let asset;
  if (JPEG.canRead(buf)) asset = new JPEG(buf);
  else if (PNG.canRead(buf)) asset = new PNG(buf);
  else if (BMFF.canRead(buf)) asset = new BMFF(buf);
  else { out.push({ file, supported: false }); continue; }
  const jumbf = asset.getManifestJUMBF();
  if (!jumbf) { out.push({ file, supported: true, manifest: false }); continue; }
  let result, count = 0;
  try {
    const store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
    count = store.manifests.length;
    result = await store.validate(asset);
  } catch (e) {
    result = ValidationResult.fromError(e);
  }
  out.push({ file, supported: true, manifest: true, manifests: count, valid: result.isValid,
             codes: result.statusEntries.map((s) => s.code) });
}
console.log(JSON.stringify(out));
