--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alert_deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_deliveries (
    id integer NOT NULL,
    run_id character varying(200),
    recorded_at timestamp with time zone NOT NULL,
    target text NOT NULL,
    systems json NOT NULL,
    ok boolean NOT NULL,
    reason text NOT NULL
);


--
-- Name: alert_deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.alert_deliveries_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: alert_deliveries_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.alert_deliveries_id_seq OWNED BY public.alert_deliveries.id;


--
-- Name: chain_head; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.chain_head (
    id integer NOT NULL,
    seq integer NOT NULL,
    hash character varying(64) NOT NULL
);


--
-- Name: check_results; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.check_results (
    id integer NOT NULL,
    result_pk integer NOT NULL,
    "position" integer NOT NULL,
    name text NOT NULL,
    kind character varying(100) NOT NULL,
    status character varying(16) NOT NULL,
    expected json,
    observed json,
    duration_s double precision NOT NULL,
    message text NOT NULL
);


--
-- Name: check_results_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.check_results_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: check_results_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.check_results_id_seq OWNED BY public.check_results.id;


--
-- Name: runs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.runs (
    id integer NOT NULL,
    seq integer NOT NULL,
    run_id character varying(200) NOT NULL,
    site character varying(200) NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    trigger character varying(100) NOT NULL,
    verdict character varying(32) NOT NULL,
    site_recovery_time_s double precision,
    site_rto_s double precision,
    recorded_at timestamp with time zone NOT NULL,
    prev_hash character varying(64) NOT NULL,
    hash character varying(64) NOT NULL
);


--
-- Name: runs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.runs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: runs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.runs_id_seq OWNED BY public.runs.id;


--
-- Name: steps; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.steps (
    id integer NOT NULL,
    result_pk integer NOT NULL,
    "position" integer NOT NULL,
    name character varying(100) NOT NULL,
    started_at timestamp with time zone NOT NULL,
    duration_s double precision NOT NULL,
    ok boolean NOT NULL,
    message text NOT NULL
);


--
-- Name: steps_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.steps_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: steps_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.steps_id_seq OWNED BY public.steps.id;


--
-- Name: system_results; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.system_results (
    id integer NOT NULL,
    run_pk integer NOT NULL,
    "position" integer NOT NULL,
    system character varying(200) NOT NULL,
    verdict character varying(32) NOT NULL,
    reason text NOT NULL,
    labels json NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    recovery_time_s double precision,
    rto_s double precision,
    rpo_s double precision,
    backup_age_s double precision,
    near_miss boolean NOT NULL,
    worker character varying(200),
    backup_source character varying(100),
    backup_id text,
    backup_location text,
    backup_size_bytes bigint,
    backup_sha256 character varying(64),
    backup_created_at timestamp with time zone
);


--
-- Name: system_results_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.system_results_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: system_results_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.system_results_id_seq OWNED BY public.system_results.id;


--
-- Name: alert_deliveries id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_deliveries ALTER COLUMN id SET DEFAULT nextval('public.alert_deliveries_id_seq'::regclass);


--
-- Name: check_results id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.check_results ALTER COLUMN id SET DEFAULT nextval('public.check_results_id_seq'::regclass);


--
-- Name: runs id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs ALTER COLUMN id SET DEFAULT nextval('public.runs_id_seq'::regclass);


--
-- Name: steps id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.steps ALTER COLUMN id SET DEFAULT nextval('public.steps_id_seq'::regclass);


--
-- Name: system_results id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.system_results ALTER COLUMN id SET DEFAULT nextval('public.system_results_id_seq'::regclass);


--
-- Data for Name: alert_deliveries; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: chain_head; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.chain_head VALUES (1, 3, 'e6a7b3fdc5d634933125c35dfc6e3e6d134bf50b56b55921efd81939f3d24012');


--
-- Data for Name: check_results; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.check_results VALUES (1, 1, 0, 'disk used', 'http', 'pass', '141312.0', '141312.0', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (2, 1, 1, 'status', 'http', 'pass', '200', '200', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (3, 1, 2, 'setpoint', 'http', 'pass', '63.5', '63.5', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (4, 1, 3, 'zero', 'http', 'pass', '0', '-0.0', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (5, 1, 4, 'huge', 'http', 'pass', '1180591620717411303424', '-1180591620717411303424', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (6, 1, 5, 'nested', 'http', 'pass', '{"min": 40.0, "max": 60}', '{"first": 1.0, "changed to": [2.0, 3]}', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (7, 1, 6, 'nothing', 'http', 'pass', 'null', 'null', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (8, 1, 7, 'flag', 'http', 'pass', 'true', '1', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (9, 1, 8, 'text', 'http', 'pass', '"42"', '"1e3"', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (10, 1, 9, 'not a number', 'http', 'pass', 'null', 'null', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (11, 2, 0, 'disk used', 'http', 'pass', '141312.0', '141312.0', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (12, 2, 1, 'status', 'http', 'pass', '200', '200', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (13, 2, 2, 'setpoint', 'http', 'pass', '63.5', '63.5', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (14, 3, 0, 'disk used', 'http', 'pass', '141312.0', '141312.0', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (15, 3, 1, 'status', 'http', 'pass', '200', '200', 0.125, 'Grüße ✓');
INSERT INTO public.check_results VALUES (16, 3, 2, 'setpoint', 'http', 'pass', '63.5', '63.5', 0.125, 'Grüße ✓');


--
-- Data for Name: runs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.runs VALUES (1, 1, 'legacy-1', 'plant', '2026-11-20 02:00:00.25+00', '2026-11-20 02:01:00.25+00', 'manual', 'pass', NULL, NULL, '2026-12-01 21:58:38.64862+00', '0000000000000000000000000000000000000000000000000000000000000000', 'ca4ed2387d98a79f75b8b7ebe331c449a394604b1a86d573ddce583e98370900');
INSERT INTO public.runs VALUES (2, 2, 'legacy-2', 'plant', '2026-11-21 02:00:00.25+00', '2026-11-21 02:01:00.25+00', 'manual', 'pass', NULL, NULL, '2026-12-01 21:58:38.66454+00', 'ca4ed2387d98a79f75b8b7ebe331c449a394604b1a86d573ddce583e98370900', '02b64632c2d694a7f4963f7250555d6294e25a59a1f03ac15ff3dbd5ae263f48');
INSERT INTO public.runs VALUES (3, 3, 'legacy-3', 'plant', '2026-11-22 02:00:00.25+00', '2026-11-22 02:01:00.25+00', 'manual', 'pass', NULL, NULL, '2026-12-01 21:58:38.674565+00', '02b64632c2d694a7f4963f7250555d6294e25a59a1f03ac15ff3dbd5ae263f48', 'e6a7b3fdc5d634933125c35dfc6e3e6d134bf50b56b55921efd81939f3d24012');


--
-- Data for Name: steps; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.steps VALUES (1, 1, 0, 'restore', '2026-11-20 02:00:00.25+00', 12, true, '');
INSERT INTO public.steps VALUES (2, 2, 0, 'restore', '2026-11-21 02:00:00.25+00', 12, true, '');
INSERT INTO public.steps VALUES (3, 3, 0, 'restore', '2026-11-22 02:00:00.25+00', 12, true, '');


--
-- Data for Name: system_results; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.system_results VALUES (1, 1, 0, 'historian', 'pass', '', '{"zone": "ot"}', '2026-11-20 02:00:00.25+00', '2026-11-20 02:00:42.75+00', 42.5, 300, NULL, NULL, false, NULL, 'restic', 'snap0', '/b', 1099511627776, NULL, '2026-11-20 01:00:00.25+00');
INSERT INTO public.system_results VALUES (2, 2, 0, 'historian', 'pass', '', '{"zone": "ot"}', '2026-11-21 02:00:00.25+00', '2026-11-21 02:00:42.75+00', 42.5, 300, NULL, NULL, false, 'worker1', 'restic', 'snap1', '/b', 1099511627776, NULL, '2026-11-21 01:00:00.25+00');
INSERT INTO public.system_results VALUES (3, 3, 0, 'historian', 'pass', '', '{"zone": "ot"}', '2026-11-22 02:00:00.25+00', '2026-11-22 02:00:42.75+00', 42.5, 300, NULL, NULL, false, NULL, 'restic', 'snap2', '/b', 1099511627776, NULL, '2026-11-22 01:00:00.25+00');


--
-- Name: alert_deliveries_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.alert_deliveries_id_seq', 1, false);


--
-- Name: check_results_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.check_results_id_seq', 16, true);


--
-- Name: runs_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.runs_id_seq', 3, true);


--
-- Name: steps_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.steps_id_seq', 3, true);


--
-- Name: system_results_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.system_results_id_seq', 3, true);


--
-- Name: alert_deliveries alert_deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_deliveries
    ADD CONSTRAINT alert_deliveries_pkey PRIMARY KEY (id);


--
-- Name: chain_head chain_head_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.chain_head
    ADD CONSTRAINT chain_head_pkey PRIMARY KEY (id);


--
-- Name: check_results check_results_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.check_results
    ADD CONSTRAINT check_results_pkey PRIMARY KEY (id);


--
-- Name: runs runs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);


--
-- Name: runs runs_prev_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_prev_hash_key UNIQUE (prev_hash);


--
-- Name: runs runs_run_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_run_id_key UNIQUE (run_id);


--
-- Name: runs runs_seq_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_seq_key UNIQUE (seq);


--
-- Name: steps steps_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.steps
    ADD CONSTRAINT steps_pkey PRIMARY KEY (id);


--
-- Name: system_results system_results_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.system_results
    ADD CONSTRAINT system_results_pkey PRIMARY KEY (id);


--
-- Name: ix_alert_deliveries_run_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_alert_deliveries_run_id ON public.alert_deliveries USING btree (run_id);


--
-- Name: ix_check_results_result_pk; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_check_results_result_pk ON public.check_results USING btree (result_pk);


--
-- Name: ix_runs_site; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_site ON public.runs USING btree (site);


--
-- Name: ix_steps_result_pk; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_steps_result_pk ON public.steps USING btree (result_pk);


--
-- Name: ix_system_results_run_pk; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_system_results_run_pk ON public.system_results USING btree (run_pk);


--
-- Name: ix_system_results_system; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_system_results_system ON public.system_results USING btree (system);


--
-- Name: check_results check_results_result_pk_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.check_results
    ADD CONSTRAINT check_results_result_pk_fkey FOREIGN KEY (result_pk) REFERENCES public.system_results(id);


--
-- Name: steps steps_result_pk_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.steps
    ADD CONSTRAINT steps_result_pk_fkey FOREIGN KEY (result_pk) REFERENCES public.system_results(id);


--
-- Name: system_results system_results_run_pk_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.system_results
    ADD CONSTRAINT system_results_run_pk_fkey FOREIGN KEY (run_pk) REFERENCES public.runs(id);


--
-- PostgreSQL database dump complete
--


