// Upload a file to a tus server with tus-js-client, abort at about half, then resume it with a
// new Upload from the stored URL. Prints one JSON line: the upload URL, where the abort left the
// server, where the resumed upload started and the Homeport file headers of the last answer.
//
// node upload.mjs --endpoint URL --file PATH --chunk-size BYTES [--header "Name: value"]...
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

import * as tus from "tus-js-client";

const { values } = parseArgs({
  options: {
    endpoint: { type: "string" },
    file: { type: "string" },
    "chunk-size": { type: "string" },
    filetype: { type: "string", default: "application/octet-stream" },
    header: { type: "string", multiple: true, default: [] },
  },
});

const headers = Object.fromEntries(
  values.header.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
  }),
);
const data = await readFile(values.file);
const chunkSize = Number(values["chunk-size"]);

function options(extra) {
  return {
    endpoint: values.endpoint,
    headers,
    chunkSize,
    retryDelays: [],
    removeFingerprintOnSuccess: true,
    metadata: { filename: basename(values.file), filetype: values.filetype },
    ...extra,
  };
}

// First attempt: abort from onProgress once half the bytes went out (mid-request, like an app
// that is killed), so the server keeps only what had arrived.
const uploadUrl = await new Promise((resolve, reject) => {
  const upload = new tus.Upload(
    data,
    options({
      onProgress(sent, total) {
        if (sent >= total / 2 && upload.url) {
          upload.abort().then(() => resolve(upload.url), reject);
        }
      },
      onSuccess() {
        reject(new Error("the upload finished before it could be aborted"));
      },
      onError: reject,
    }),
  );
  upload.start();
});

// Second attempt: a new Upload that knows only the URL; it asks the server for the offset (HEAD).
const result = await new Promise((resolve, reject) => {
  let resumedFrom = null;
  let fileId = null;
  let fileUrl = null;
  const upload = new tus.Upload(
    data,
    options({
      uploadUrl,
      onAfterResponse(request, response) {
        const method = request.getMethod();
        if (method === "HEAD" && resumedFrom === null) {
          resumedFrom = Number(response.getHeader("Upload-Offset"));
        }
        fileId = response.getHeader("Homeport-File-Id") ?? fileId;
        fileUrl = response.getHeader("Homeport-File-Url") ?? fileUrl;
      },
      onSuccess() {
        resolve({ url: upload.url, resumed_from: resumedFrom, file_id: fileId, file_url: fileUrl });
      },
      onError: reject,
    }),
  );
  upload.start();
});

process.stdout.write(`${JSON.stringify({ ...result, size: data.length })}\n`);
