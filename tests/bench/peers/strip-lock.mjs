// Removes "resolved" URLs from package-lock.json so that no registry host is recorded;
// npm ci resolves each package by name and version against the configured registry.
import { readFileSync, writeFileSync } from 'node:fs';
const path = new URL('./package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(path, 'utf8'));
let removed = 0;
for (const entry of Object.values(lock.packages ?? {})) {
  if ('resolved' in entry) { delete entry.resolved; removed++; }
}
writeFileSync(path, JSON.stringify(lock, null, 2) + '\n');
console.log(`removed ${removed} resolved fields`);
