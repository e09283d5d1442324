// The deployment files (deploy/): no Docker engine or Kubernetes here, so each YAML file is parsed
// (the `yaml` package, strict: no custom tags) and checked for the settings that make the pieces fit together: the
// ports the receiver image uses are the ones Prometheus scrapes, compose mounts the provisioning,
// the sender Job has the privileges ptrace and userfaultfd need, the systemd unit's variables are
// defined by its environment file.

import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../helpers/target';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (rel: string) => fs.readFileSync(path.join(DEPLOY, rel), 'utf8');

/** Every document of a YAML file as plain data; a syntax error or an unknown tag fails the test. */
function yamlDocs(rel: string): any[] {
  return parseAllDocuments(read(rel)).map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${rel}, document ${i + 1}: ${doc.errors[0].message}`);
    return doc.toJS();
  });
}
const yaml = (rel: string) => yamlDocs(rel)[0];

/** The receiver's TLS flags in the image and the DaemonSet (files of a mounted Secret). */
const TLS_FLAGS = ['--tls-cert', '/etc/precopy/tls/tls.crt', '--tls-key', '/etc/precopy/tls/tls.key', '--tls-ca', '/etc/precopy/tls/ca.crt'];

/** Whether the pod mounts Secret `secret` read-only at `at` in the container. */
function mountsSecret(pod: any, container: any, secret: string, at: string): boolean {
  const volume = pod.volumes.find((v: any) => v.secret?.secretName === secret);
  return !!volume && container.volumeMounts.some((m: any) => m.name === volume.name && m.mountPath === at && m.readOnly === true);
}

const YAML_FILES = [
  'docker-compose.yml',
  'prometheus/prometheus.yml',
  'prometheus/alerts.yml',
  'prometheus/alerts.test.yml',
  'grafana/provisioning/datasources/prometheus.yml',
  'grafana/provisioning/dashboards/precopy.yml',
  'kubernetes/namespace.yaml',
  'kubernetes/receiver-daemonset.yaml',
  'kubernetes/receiver-service.yaml',
  'kubernetes/sender-job.yaml',
];

test('every YAML file parses to one document', (t) => {
  for (const f of YAML_FILES) {
    const docs = yamlDocs(f);
    t.is(docs.length, 1, f);
    t.is(typeof docs[0], 'object', f);
  }
});

test('compose: receiver, Prometheus and Grafana wired together', (t) => {
  const c = yaml('docker-compose.yml');
  t.deepEqual(Object.keys(c.services).sort(), ['grafana', 'prometheus', 'receiver']);
  const r = c.services.receiver;
  t.is(r.build.dockerfile, 'deploy/Dockerfile');
  // A try-out stack: plaintext (--insecure), gRPC published on the host's loopback only.
  t.deepEqual(r.command, ['serve', '--listen', '0.0.0.0:7070', '--images', '/images', '--metrics-listen', '0.0.0.0:9470', '--insecure']);
  t.true(r.ports.includes('127.0.0.1:7070:7070') && r.ports.includes('9470:9470'));
  // Prometheus scrapes the receiver service on its metrics port.
  const prom = yaml('prometheus/prometheus.yml');
  const job = prom.scrape_configs.find((j: any) => j.job_name === 'precopy-receiver');
  t.deepEqual(job.static_configs[0].targets, ['receiver:9470']);
  t.deepEqual(prom.rule_files, ['alerts.yml']);
  t.true(c.services.prometheus.volumes.includes('./prometheus:/etc/prometheus:ro'));
  t.true(c.services.prometheus.command.includes('--config.file=/etc/prometheus/prometheus.yml'));
  // Grafana gets the provisioning and the dashboards where the provider looks.
  const provider = yaml('grafana/provisioning/dashboards/precopy.yml').providers[0];
  t.true(c.services.grafana.volumes.includes(`./grafana/dashboards:${provider.options.path}:ro`));
  t.true(c.services.grafana.volumes.includes('./grafana/provisioning:/etc/grafana/provisioning:ro'));
  const ds = yaml('grafana/provisioning/datasources/prometheus.yml').datasources[0];
  t.is(ds.url, 'http://prometheus:9090');
  t.is(ds.uid, JSON.parse(read('grafana/dashboards/precopy.json')).panels[0].datasource.uid);
});

test('Dockerfile: node:20-bookworm build, receiver serve with metrics and mutual TLS as the default command', (t) => {
  const d = read('Dockerfile');
  t.regex(d, /^FROM node:20-bookworm AS build$/m);
  t.regex(d, /^RUN npm ci$/m);
  t.regex(d, /^ENTRYPOINT \["node", "dist\/receiver\/cli\.js"\]$/m);
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(d)![1]) as string[];
  t.deepEqual(cmd.slice(0, 7), ['serve', '--listen', '0.0.0.0:7070', '--images', '/images', '--metrics-listen', '0.0.0.0:9470']);
  t.deepEqual(cmd.slice(7), TLS_FLAGS);
  t.regex(d, /build\/Release\/precopy\.node/, 'the runtime stage has the addon');
  // The files the build copies exist.
  for (const f of ['package.json', 'package-lock.json', 'binding.gyp', 'native', 'proto']) t.true(fs.existsSync(path.join(REPO_ROOT, f)), f);
});

test('kubernetes: receiver DaemonSet and Service, sender Job with hostPID and SYS_PTRACE', (t) => {
  const ds = yaml('kubernetes/receiver-daemonset.yaml');
  t.is(ds.kind, 'DaemonSet');
  const rc = ds.spec.template.spec.containers[0];
  t.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  t.true(rc.args.includes('--metrics-listen'));
  // Mutual TLS with the files of a Secret mounted where the flags point.
  t.deepEqual(rc.args.slice(rc.args.indexOf('--tls-cert')), TLS_FLAGS);
  t.true(mountsSecret(ds.spec.template.spec, rc, 'precopy-receiver-tls', '/etc/precopy/tls'));
  t.deepEqual(rc.ports.map((p: any) => p.containerPort).sort(), [7070, 9470]);
  t.is(ds.spec.template.metadata.annotations['prometheus.io/port'], '9470');

  const svc = yaml('kubernetes/receiver-service.yaml');
  t.is(svc.kind, 'Service');
  t.deepEqual(svc.spec.selector, ds.spec.selector.matchLabels);
  t.deepEqual(svc.spec.ports.map((p: any) => p.targetPort).sort(), ['grpc', 'metrics']);

  const job = yaml('kubernetes/sender-job.yaml');
  t.is(job.kind, 'Job');
  const pod = job.spec.template.spec;
  t.is(pod.hostPID, true);
  t.is(pod.restartPolicy, 'Never');
  const sc = pod.containers[0].securityContext;
  t.true(sc.capabilities.add.includes('SYS_PTRACE'));
  t.is(sc.privileged, true);
  t.deepEqual(pod.containers[0].command, ['node', 'dist/sender/cli.js']);
  t.true(pod.containers[0].args.includes('--pid') && pod.containers[0].args.includes('--to'));
  const sa: string[] = pod.containers[0].args;
  for (const flag of ['--tls-ca', '--tls-cert', '--tls-key']) t.true(sa[sa.indexOf(flag) + 1]?.startsWith('/etc/precopy/tls/'), flag);
  t.true(mountsSecret(pod, pod.containers[0], 'precopy-sender-tls', '/etc/precopy/tls'));

  const ns = yaml('kubernetes/namespace.yaml');
  for (const doc of [ds, svc, job]) t.is(doc.metadata.namespace, ns.metadata.name);
});

test('systemd: the unit runs receiver serve with every variable its environment file sets', (t) => {
  const unit = read('systemd/precopy-receiver.service');
  const env = read('systemd/precopy-receiver.env');
  for (const section of ['[Unit]', '[Service]', '[Install]']) t.true(unit.includes(`\n${section}\n`) || unit.startsWith(section), section);
  const exec = /^ExecStart=(.*)$/m.exec(unit)![1];
  t.regex(exec, /^\/usr\/bin\/node \/opt\/precopy\/dist\/receiver\/cli\.js serve /);
  const defined = new Set([...env.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]));
  const used = [...exec.matchAll(/\$\{([A-Z_]+)\}/g)].map((m) => m[1]);
  t.true(used.length >= 3);
  for (const v of used) t.true(defined.has(v), `${v} is set in the env file`);
  t.regex(unit, /^EnvironmentFile=\/etc\/precopy\/receiver\.env$/m);
  // TLS files handed over as credentials (%d: their directory), one LoadCredential per flag.
  for (const [flag, name] of [
    ['--tls-cert', 'tls.crt'],
    ['--tls-key', 'tls.key'],
    ['--tls-ca', 'ca.crt'],
  ]) {
    t.true(exec.includes(`${flag} %d/${name}`), flag);
    t.regex(unit, new RegExp(`^LoadCredential=${name.replace('.', '\\.')}:/etc/precopy/tls/\\S+$`, 'm'));
  }
  t.regex(unit, /^WantedBy=multi-user\.target$/m);
});
