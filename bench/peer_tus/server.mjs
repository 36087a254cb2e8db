// The peer of W5: a Node tus server (@tus/server with its file store), the workload's other side.
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [directory, port] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http
  .createServer((request, response) => tus.handle(request, response))
  .listen(Number(port), "127.0.0.1", () => console.log("listening"));
